"""examples/resumable_crawler.py, run as a real child process: complete runs, kills, and the runs after them."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import BaseModel

from recoverable import FileSystemStorageClient, KeyedRecoverableState, KeyValueStore, RecoverableSet

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "resumable_crawler.py"
STORE_NAME = "resumable-crawler"
STATE_KEY = "CRAWL_STATE"
DOMAINS_KEY = "DOMAINS"
SEEN_KEY = "SEEN_URLS"


class DomainCounters(BaseModel):
    """The example's model of a domain's counters, as a reader of its store declares it."""

    pages: int = 0
    bytes: int = 0
    links_to: int = 0


RUN_TIMEOUT = 60.0


def site_paths(pages: int) -> set[str]:
    return {"/"} | {f"/page/{i}" for i in range(1, pages)}


class Crawler:
    """Runs the example in `tmp_path` with its own storage folder."""

    def __init__(self, *, python: str, env: dict[str, str], cwd: Path) -> None:
        self.python = python
        self.env = env
        self.cwd = cwd
        self.storage_dir = cwd / "storage"
        self.env["RECOVERABLE_STORAGE_DIR"] = str(self.storage_dir)

    def command(self, *args: str) -> list[str]:
        return [self.python, str(EXAMPLE), *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            check=False,
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )

    def start(self, *args: str, stderr: int = subprocess.STDOUT) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(*args),
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )

    async def store(self) -> KeyValueStore:
        return await KeyValueStore.open(
            name=STORE_NAME, storage_client=FileSystemStorageClient(storage_dir=self.storage_dir)
        )

    async def saved_state(self) -> dict[str, Any]:
        state = await (await self.store()).get_value(STATE_KEY)
        assert isinstance(state, dict), f"no saved state in {self.storage_dir}"
        return state

    async def saved_domains_and_urls(self) -> tuple[dict[str, DomainCounters], set[str]]:
        """The per-domain counters and the URLs seen, as the example's keyed states load them."""
        store = await self.store()
        domains = KeyedRecoverableState(value_type=DomainCounters, persist_state_key=DOMAINS_KEY, key_value_store=store)
        seen = RecoverableSet(persist_state_key=SEEN_KEY, key_value_store=store)
        async with domains, seen:
            return dict(domains.items()), set(seen)


@pytest.fixture
def crawler(python: str, child_env: dict[str, str], tmp_path: Path) -> Crawler:
    return Crawler(python=python, env=child_env, cwd=tmp_path)


def read_until_progress(proc: subprocess.Popen[str], pages: int) -> list[str]:
    """Read the child's output until it reports at least `pages` pages done; return the lines read."""
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line)
        match = re.match(r"progress: (\d+) pages done", line)
        if match and int(match.group(1)) >= pages:
            return lines
    pytest.fail(f"the crawler ended before {pages} pages were done:\n{''.join(lines)}")


def figure(output: str, label: str) -> int:
    match = re.search(rf"^\s*{re.escape(label)}:\s+(\d+)", output, re.MULTILINE)
    assert match, f"no {label!r} in:\n{output}"
    return int(match.group(1))


def resumed_pages(output: str) -> int:
    match = re.search(r"^resuming: (\d+) pages done", output, re.MULTILINE)
    assert match, f"the run did not resume:\n{output}"
    return int(match.group(1))


def assert_complete(state: dict[str, Any], pages: int) -> None:
    assert set(state["done"]) == site_paths(pages)
    assert len(state["done"]) == pages
    assert all(result["status"] == 200 for result in state["done"].values())
    assert state["frontier"] == {}
    assert state["failed"] == {}
    assert state["finished_at"] is not None


async def test_full_run_crawls_every_page_once(crawler: Crawler) -> None:
    result = crawler.run("--site-pages", "120", "--delay-ms", "2")
    assert result.returncode == 0, result.stderr
    assert "starting fresh" in result.stdout
    assert "summary: crawl finished" in result.stdout
    assert figure(result.stdout, "fetched this run") == 120
    assert figure(result.stdout, "fetched twice") == 0
    state = await crawler.saved_state()
    assert_complete(state, 120)
    assert state["fetches"] == 120
    assert {r["run"] for r in state["done"].values()} == {1}
    # The counters agree with the pages.
    assert state["links_found"] == sum(r["links"] for r in state["done"].values())
    domains, seen = await crawler.saved_domains_and_urls()
    assert domains["127.0.0.1"].pages == 120
    assert domains["127.0.0.1"].bytes == state["bytes_fetched"]
    assert sum(counters.links_to for counters in domains.values()) == state["links_found"] + 12
    assert domains["example.com"] == DomainCounters(pages=0, bytes=0, links_to=12)
    assert seen == {f"http://127.0.0.1{path}" for path in site_paths(120)} | {"http://example.com/elsewhere"}

    again = crawler.run("--site-pages", "120", "--delay-ms", "2")
    assert again.returncode == 0, again.stderr
    assert resumed_pages(again.stdout) == 120
    assert figure(again.stdout, "fetched this run") == 0


async def test_sigkill_then_rerun_resumes_from_the_last_save(crawler: Crawler) -> None:
    crawler.env["RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS"] = "200"
    args = ("--site-pages", "300", "--delay-ms", "30", "--concurrency", "4")
    proc = crawler.start(*args)
    try:
        read_until_progress(proc, 100)
        await asyncio.sleep(0.5)  # more than one persist interval after 100 pages were done
        assert proc.poll() is None, "the crawler finished before it could be killed"
        proc.kill()
        proc.wait(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    saved = await crawler.saved_state()
    done_before = set(saved["done"])
    assert 0 < len(done_before) < 300

    second = crawler.run(*args)
    assert second.returncode == 0, second.stderr
    assert resumed_pages(second.stdout) == len(done_before)
    assert "summary: crawl finished" in second.stdout
    # Nothing saved as done was fetched again, and the second run fetched exactly the rest, once each.
    assert figure(second.stdout, "re-fetched, were done") == 0
    assert figure(second.stdout, "fetched twice") == 0
    assert figure(second.stdout, "fetched this run") == 300 - len(done_before)

    state = await crawler.saved_state()
    assert_complete(state, 300)
    by_run = {path for path, r in state["done"].items() if r["run"] == 1}
    assert by_run == done_before
    assert {path for path, r in state["done"].items() if r["run"] == 2} == site_paths(300) - done_before
    assert state["runs"] == 2


@pytest.mark.parametrize(
    ("sig", "returncode"), [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
async def test_signal_saves_at_once_then_rerun_resumes(crawler: Crawler, sig: signal.Signals, returncode: int) -> None:
    # No timer save during the run: what is saved, the signal saved.
    crawler.env["RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS"] = "600000"
    args = ("--site-pages", "200", "--delay-ms", "20")
    proc = crawler.start(*args)
    try:
        lines = read_until_progress(proc, 50)
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    assert proc.returncode == returncode, output
    assert "stopping: saving the state" in output

    saved = await crawler.saved_state()
    assert 50 <= len(saved["done"]) < 200

    second = crawler.run(*args)
    assert second.returncode == 0, second.stderr
    assert resumed_pages(second.stdout) == len(saved["done"])
    assert figure(second.stdout, "re-fetched, were done") == 0
    assert_complete(await crawler.saved_state(), 200)


async def test_max_pages_stops_and_fresh_starts_over(crawler: Crawler) -> None:
    first = crawler.run("--site-pages", "100", "--delay-ms", "0", "--max-pages", "40")
    assert first.returncode == 0, first.stderr
    assert "summary: crawl stopped with" in first.stdout
    state = await crawler.saved_state()
    assert len(state["done"]) == 40
    assert state["frontier"]

    second = crawler.run("--site-pages", "100", "--delay-ms", "0")
    assert second.returncode == 0, second.stderr
    assert resumed_pages(second.stdout) == 40
    assert figure(second.stdout, "fetched this run") == 60
    assert_complete(await crawler.saved_state(), 100)

    other_site = crawler.run("--site-pages", "50", "--delay-ms", "0")
    assert other_site.returncode == 2
    assert "--fresh" in other_site.stderr

    fresh = crawler.run("--site-pages", "50", "--delay-ms", "0", "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert "starting fresh" in fresh.stdout
    state = await crawler.saved_state()
    assert_complete(state, 50)
    assert state["runs"] == 1


async def test_a_rerun_right_after_sigkill_starts_while_the_killed_run_is_still_a_zombie(crawler: Crawler) -> None:
    crawler.env["RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS"] = "200"
    args = ("--site-pages", "200", "--delay-ms", "30")
    proc = crawler.start(*args)
    try:
        read_until_progress(proc, 40)
        await asyncio.sleep(0.5)
        proc.kill()
        # Not reaped: until its parent waits for it, the killed crawler stays a zombie holding its pid.
        for _ in range(250):
            if psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the killed crawler did not become a zombie")
        second = crawler.run(*args)
        assert psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE  # still there while the rerun ran
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert second.returncode == 0, second.stderr
    assert resumed_pages(second.stdout) >= 40
    assert_complete(await crawler.saved_state(), 200)


async def test_output_cut_short_like_head_stops_cleanly_and_the_next_run_resumes(crawler: Crawler) -> None:
    """`resumable_crawler.py | head -3`: once the reader is gone, the crawler saves, lets go and exits 141."""
    crawler.env["RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS"] = "600000"  # what is saved, the way out saved
    args = ("--site-pages", "300", "--delay-ms", "20")
    proc = crawler.start(*args, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        head = [proc.stdout.readline() for _ in range(3)]
        proc.stdout.close()  # the reader goes away, as `head -3` does
        _, stderr = proc.communicate(timeout=30)  # a hang fails here
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert head[2] == "starting fresh\n", head
    assert proc.returncode == 128 + signal.SIGPIPE, stderr
    assert "Traceback" not in stderr
    assert "Error" not in stderr, stderr

    saved = await crawler.saved_state()
    assert 0 < len(saved["done"]) < 300
    assert not await (await crawler.store()).record_exists(STATE_KEY + ".lease")  # let go, not left behind

    second = crawler.run(*args)
    assert second.returncode == 0, second.stderr
    assert resumed_pages(second.stdout) == len(saved["done"])
    assert figure(second.stdout, "re-fetched, were done") == 0
    assert_complete(await crawler.saved_state(), 300)
