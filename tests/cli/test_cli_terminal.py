"""The command on a pseudo-terminal: `get` colours JSON, `export` draws a progress bar, writes ask first."""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import termios
from typing import TYPE_CHECKING

from recoverable.storages import FileSystemStorageClient

if TYPE_CHECKING:
    from pathlib import Path

    from cli._support import Cli

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
JSON = "application/json"


def on_terminal(cli: Cli, *args: str, typed: bytes = b"") -> tuple[int, bytes]:
    """Run the command with stdin, stdout and stderr on a pseudo-terminal of 120 columns; what it showed there."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 120, 0, 0))
    env = {k: v for k, v in cli.env.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")}
    process = subprocess.Popen(
        [*cli.command, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=cli.cwd,
        env={**env, "TERM": "xterm-256color"},
    )
    os.close(slave)
    if typed:
        os.write(master, typed)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every end of the terminal is closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return process.wait(timeout=120), shown


async def _seed(storage: Path, name: str | None, records: dict[str, tuple[bytes, str]]) -> None:
    async with FileSystemStorageClient(storage_dir=storage) as client:
        store = await client.open_key_value_store_client(**({} if name is None else {"name": name}))
        for key, (value, content_type) in records.items():
            await store.set_record(key=key, value=value, content_type=content_type)


async def test_get_colours_json_and_export_draws_a_progress_bar(cli: Cli, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    state = {"pages": 3, "seen": ["https://example.com/"], "done": True}
    await _seed(
        storage,
        None,
        {
            "STATE": (json.dumps(state).encode(), JSON),
            "notes": (b"line one\nline \x1b[31mtwo", "text/plain; charset=utf-8"),
            "blob": (b"\x00\xff", "application/octet-stream"),
        },
    )
    await _seed(storage, "big", {f"record-{i:05}": (b'{"i": %d}' % i, JSON) for i in range(2500)})

    code, shown = on_terminal(cli, "get", "default", "STATE")
    assert code == 0, shown
    assert b'\x1b[1;34m"pages"\x1b[0m' in shown  # keys, numbers, strings and booleans in colours
    assert b"\x1b[1;36m3\x1b[0m" in shown
    assert json.loads(ANSI.sub(b"", shown)) == state
    assert b"\r\n  " in shown  # indented, one value a line

    code, shown = on_terminal(cli, "get", "default", "notes")
    assert code == 0, shown
    assert shown == b"line one\r\nline \\x1b[31mtwo\r\n"  # text as it is, but no escape sequence of the record's

    code, shown = on_terminal(cli, "get", "default", "blob")
    assert code == 1
    assert b"is binary (application/octet-stream, 2 bytes) and is not printed on a terminal" in shown

    folder = tmp_path / "export" / "key_value_stores" / "big"
    code, shown = on_terminal(cli, "export", "big", str(folder))
    assert code == 0, shown[-2000:]
    assert b"copying records" in shown
    assert "━".encode() in shown  # the bar
    assert b"2500/2500" in shown
    assert f"exported 2,500 records of store 'big' to {folder}".encode() in shown
    async with FileSystemStorageClient(storage_dir=tmp_path / "export") as client:
        exported = await client.open_key_value_store_client(name="big")
        assert len([info async for info in exported.iterate_keys()]) == 2500

    # Piped, the same export draws nothing.
    piped = cli("export", "big", str(tmp_path / "again" / "big"))
    assert piped.code == 0
    assert piped.err == ""


async def test_a_state_record_changes_on_a_terminal_only_when_the_answer_is_yes(cli: Cli, tmp_path: Path) -> None:
    await _seed(tmp_path / "storage", None, {"STATE": (b"1", JSON), "STATE.lease": (b"{}", JSON)})

    code, shown = on_terminal(cli, "delete", "default", "STATE", typed=b"n\n")
    assert code == 1
    assert b"Delete the state record 'STATE' of store 'default'? [y/N]" in shown
    assert b"recoverable delete: error: nothing was changed: not confirmed" in shown
    assert cli("get", "default", "STATE").out == b"1"

    code, shown = on_terminal(cli, "delete", "default", "STATE", typed=b"y\n")
    assert code == 0, shown
    assert b"deleted 'STATE' from store 'default'" in shown
    assert cli("get", "default", "STATE").code == 1
