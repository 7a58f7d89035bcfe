"""What the crash tests share: the environment of their children, and reading a child's lines with a deadline."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LINE_TIMEOUT_SECS = 30.0


def child_environment() -> dict[str, str]:
    """As the `child_env` fixture, which is per test while the rounds are run once per module."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECOVERABLE_", "CRAWLEE_", "APIFY_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    return env


async def read_line(process: asyncio.subprocess.Process, round_: int) -> str:
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), LINE_TIMEOUT_SECS)
    except TimeoutError:
        pytest.fail(f"round {round_}: the child printed nothing for {LINE_TIMEOUT_SECS} s")
    if not line.endswith(b"\n"):
        err = await asyncio.wait_for(process.stderr.read(), LINE_TIMEOUT_SECS)
        pytest.fail(
            f"round {round_}: the child closed its output before printing a whole line: {line!r}\n{err.decode()}"
        )
    return line.decode().strip()
