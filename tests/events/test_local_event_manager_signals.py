"""Signals sent to real child processes running `events_signal_child.py`."""

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("events_signal_child.py")

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


class Child:
    def __init__(self, mode: str, record_file: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        self.record_file = record_file
        self.process = subprocess.Popen(
            [sys.executable, str(CHILD), mode, str(record_file)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line != "ready\n":
            self.process.kill()
            _, stderr = self.process.communicate(timeout=30)
            pytest.fail(f"the child did not start: {line!r}\n{stderr}")

    def send(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def finish(self) -> tuple[int, str]:
        """Wait for the child to end; return its status and its standard error."""
        _, stderr = self.process.communicate(timeout=60)
        return self.process.returncode, stderr

    def records(self) -> list[dict[str, object]]:
        if not self.record_file.exists():
            return []
        return [json.loads(line) for line in self.record_file.read_text().splitlines()]

    def wait_for(self, predicate: Callable[[list[dict[str, object]]], bool], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.records()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                pytest.fail(f"the child did not record what was expected: {self.records()}")
            time.sleep(0.02)


@pytest.fixture
def start_child(tmp_path: Path) -> Iterator[Callable[[str], Child]]:
    children: list[Child] = []

    def start(mode: str) -> Child:
        child = Child(mode, tmp_path / f"records-{len(children)}.jsonl")
        children.append(child)
        return child

    yield start
    for child in children:
        if child.process.poll() is None:
            child.process.kill()
            child.process.communicate(timeout=30)


def test_sigterm_persists_with_is_migrating_then_dies_by_sigterm(start_child: Callable[[str], Child]) -> None:
    child = start_child("handle")
    child.send(signal.SIGTERM)
    returncode, stderr = child.finish()
    assert returncode == -signal.SIGTERM, stderr
    assert child.records() == [
        {"event": "migrating", "time_remaining_secs": None},
        # Written 0.3 s after the signal by an async listener: the manager waited for it.
        {"event": "persistState", "is_migrating": True, "after": "migrating"},
    ]


def test_sigint_persists_then_ends_with_keyboard_interrupt(start_child: Callable[[str], Child]) -> None:
    child = start_child("handle")
    child.send(signal.SIGINT)
    returncode, stderr = child.finish()
    # An uncaught KeyboardInterrupt makes Python end itself by SIGINT.
    assert returncode == -signal.SIGINT, stderr
    assert "KeyboardInterrupt" in stderr
    assert child.records() == [
        {"event": "aborting"},
        {"event": "persistState", "is_migrating": False, "after": "aborting"},
        # asyncio.run() turned the re-delivered SIGINT into the cancellation of the main task, so the
        # manager's `async with` exited normally and emitted its final PERSIST_STATE.
        {"event": "persistState", "is_migrating": False, "after": "persistState"},
    ]


def test_without_signal_handling_sigterm_kills_at_once(start_child: Callable[[str], Child]) -> None:
    child = start_child("no-signals")
    child.send(signal.SIGTERM)
    returncode, stderr = child.finish()
    assert returncode == -signal.SIGTERM, stderr
    assert not child.record_file.exists()


def test_second_sigterm_kills_without_waiting_for_stuck_listeners(start_child: Callable[[str], Child]) -> None:
    child = start_child("hang")
    child.send(signal.SIGTERM)
    child.wait_for(lambda records: {"event": "persistState", "is_migrating": True, "after": "migrating"} in records)
    time.sleep(0.2)
    assert child.process.poll() is None  # still waiting for the listener that never finishes
    child.send(signal.SIGTERM)
    returncode, stderr = child.finish()
    assert returncode == -signal.SIGTERM, stderr


def test_second_sigint_ends_the_program_despite_stuck_listeners(start_child: Callable[[str], Child]) -> None:
    child = start_child("hang")
    child.send(signal.SIGINT)
    child.wait_for(lambda records: {"event": "persistState", "is_migrating": False, "after": "aborting"} in records)
    time.sleep(0.2)
    assert child.process.poll() is None  # still waiting for the listener that never finishes
    child.send(signal.SIGINT)
    returncode, stderr = child.finish()
    assert returncode == -signal.SIGINT, stderr
    assert "KeyboardInterrupt" in stderr
    assert "never retrieved" not in stderr


def test_handler_installed_with_the_loop_gets_the_signal(start_child: Callable[[str], Child]) -> None:
    child = start_child("loop-handler")
    child.send(signal.SIGTERM)
    returncode, stderr = child.finish()
    assert returncode == 3, stderr
    assert child.records() == [
        {"event": "migrating", "time_remaining_secs": None},
        {"event": "persistState", "is_migrating": True, "after": "migrating"},
        {"event": "user-handler"},
        {"event": "persistState", "is_migrating": False, "after": "persistState"},
    ]
