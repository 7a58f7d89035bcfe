"""After a Crawlee crawler ran (it takes SIGINT over while it runs), Ctrl-C still saves and hands the state over."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from recoverable import FileSystemStorageClient, KeyValueStore
from recoverable._ownership import LEASE_SUFFIX

PROGRAM = Path(__file__).with_name("crawl_then_wait.py")


async def test_sigint_after_a_crawl_saves_and_releases_the_lease(
    python: str, child_env: dict[str, str], tmp_path: Path
) -> None:
    storage = tmp_path / "storage"
    proc = subprocess.Popen(  # noqa: ASYNC220 - a real program, signalled as a user would
        [python, str(PROGRAM), str(storage)],
        env={**child_env, "RECOVERABLE_PERSIST_STATE_INTERVAL_MILLIS": "3600000"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "CRAWLED"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The library's manager handled the signal (Crawlee had left it to Python's default), and the state made
    # its final save and let go of its lease on it, before the program ended.
    assert "SIGINT received: emitting events" in err, err[-2000:]
    assert "made its final save" in err, err[-2000:]
    kvs = await KeyValueStore.open(name="crawl", storage_client=FileSystemStorageClient(storage_dir=storage))
    assert await kvs.get_value("CRAWL") == {"pages": 103}
    assert not await kvs.record_exists(f"CRAWL{LEASE_SUFFIX}")
