"""copy_record on the file system: a hard link with a version tag of its own, seen by other processes, never a way out.

The copy of a record of this library's layout is a hard link to the source's file: the two names share an inode,
so their modification time, inode and size, and the copy's version carries a tag kept in `.~copy.<hash>`. These
tests check what that means for versions, other processes, crashes, Crawlee's stores and links swapped in.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import re
import signal
import textwrap
from typing import TYPE_CHECKING

import pytest

from recoverable.errors import StorageBackendError, VersionConflictError
from recoverable.storages._file_system import _copies, _own_layout
from recoverable.storages._file_system._copies import tagged
from recoverable.storages._file_system._layout import COPY_PREFIX, TEMP_PREFIX
from recoverable.storages._file_system._record_index import _note_files
from recoverable.storages._file_system._store_dir import StoreDir
from recoverable.storages._file_system._store_folder import RecordFile, StoreFolder
from recoverable.storages._file_system._writers_lock import LockWait

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from recoverable.storages import FileSystemStorageClient, KeyValueStoreClient

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
SECRET = b'{"secret": "outside the store"}'


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the storage folder that no store may read or write."""
    path = tmp_path / "outside" / "secret.json"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def folder(stores_dir: Path) -> Path:
    return stores_dir / "copies"


async def _store(client: FileSystemStorageClient) -> KeyValueStoreClient:
    return await client.open_key_value_store_client(name="copies")


async def _record(store: KeyValueStoreClient, key: str) -> tuple[bytes, str, str] | None:
    record = await store.get_record(key=key)
    return None if record is None else (record.value, record.content_type, record.version)


def _names(folder: Path, prefix: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(prefix))


def _tags(folder: Path) -> list[str]:
    return _names(folder, COPY_PREFIX)


def _temp_files(folder: Path) -> list[str]:
    return _names(folder, TEMP_PREFIX)


def _untouched(outside: Path) -> bool:
    return outside.read_bytes() == SECRET


def _swap_for_link(path: Path, target: Path) -> None:
    """Replace `path` by a symbolic link to `target` in one step, as an attacker racing the store would."""
    temp = path.with_name(path.name + ".swap")
    temp.symlink_to(target)
    os.replace(temp, path)


# --- a hard link, with a version of its own ---------------------------------------------------------------


async def test_the_copy_is_a_hard_link_of_the_source_and_its_version_has_a_tag(
    storage_client: FileSystemStorageClient, folder: Path
) -> None:
    store = await _store(storage_client)
    source = await store.set_record(key="state", value=b'{"pages": 3}', content_type=JSON)

    copied = await store.copy_record(key="state", to_key="state-history-1", if_version=source)

    original, copy = os.stat(folder / "state.json"), os.stat(folder / "state-history-1.json")
    assert os.path.samestat(original, copy)
    assert original.st_nlink == 2
    assert copied is not None
    assert re.fullmatch(re.escape(source) + "-[0-9a-f]{16}", copied)
    assert len(_tags(folder)) == 1
    assert _temp_files(folder) == []
    assert await _record(store, "state") == (b'{"pages": 3}', JSON, source)
    assert await _record(store, "state-history-1") == (b'{"pages": 3}', JSON, copied)


async def test_a_copy_writes_no_bytes_of_the_record(
    storage_client: FileSystemStorageClient, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store(storage_client)
    await store.set_record(key="big", value=b"x" * 1_000_000, content_type="application/octet-stream")
    written: list[int] = []
    durable_write = _own_layout.durable_write

    def counting(folder_fd: int, name: str, data: bytes | memoryview, **kwargs: int | None) -> os.stat_result:
        written.append(len(data))
        return durable_write(folder_fd, name, data, **kwargs)

    monkeypatch.setattr(_own_layout, "durable_write", counting)
    await store.copy_record(key="big", to_key="big.copy")

    assert written == []  # only the small tag file is written, by _copies
    assert os.path.samestat(os.stat(folder / "big.bin"), os.stat(folder / "big.copy.bin"))


async def test_rewriting_the_source_leaves_the_copy_and_its_version(
    storage_client: FileSystemStorageClient, folder: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    store = await _store(storage_client)
    source = await store.set_record(key="state", value=b"1", content_type=JSON)
    copied = await store.copy_record(key="state", to_key="history")

    rewritten = await store.set_record(key="state", value=b"2", content_type=JSON, if_version=source)

    assert os.stat(folder / "history.json").st_nlink == 1
    assert await _record(store, "history") == (b"1", JSON, copied)
    other = await _store(restart())
    assert await _record(other, "history") == (b"1", JSON, copied)
    assert await _record(other, "state") == (b"2", JSON, rewritten)
    await other.delete_record(key="history", if_version=copied)
    assert _tags(folder) == []


async def test_the_same_file_linked_again_after_a_rewrite_gets_a_new_version(
    storage_client: FileSystemStorageClient, folder: Path
) -> None:
    store = await _store(storage_client)
    await store.set_record(key="src", value=b"same", content_type=JSON)
    first = await store.copy_record(key="src", to_key="dst")
    await store.set_record(key="dst", value=b"same", content_type=JSON)
    assert _tags(folder) == []  # the rewrite took the copy's tag away with its file

    second = await store.copy_record(key="src", to_key="dst")

    assert os.path.samestat(os.stat(folder / "src.json"), os.stat(folder / "dst.json"))
    assert second != first
    assert await _record(store, "dst") == (b"same", JSON, second)
    with pytest.raises(VersionConflictError):
        await store.set_record(key="dst", value=b"late", content_type=JSON, if_version=first)


async def test_a_copy_over_the_same_file_writes_the_bytes_and_a_new_version(
    storage_client: FileSystemStorageClient, folder: Path
) -> None:
    store = await _store(storage_client)
    await store.set_record(key="src", value=b"v", content_type=JSON)
    first = await store.copy_record(key="src", to_key="dst")

    second = await store.copy_record(key="src", to_key="dst")

    assert second not in (None, first)
    assert not os.path.samestat(os.stat(folder / "src.json"), os.stat(folder / "dst.json"))
    assert await _record(store, "dst") == (b"v", JSON, second)
    assert _tags(folder) == []


async def test_a_copy_of_another_content_type_removes_the_older_file_and_its_tag(
    storage_client: FileSystemStorageClient, folder: Path
) -> None:
    store = await _store(storage_client)
    await store.set_record(key="text", value=b"words", content_type=TEXT)
    await store.set_record(key="json", value=b"[]", content_type=JSON)
    await store.copy_record(key="text", to_key="dst")
    assert len(_tags(folder)) == 1

    copied = await store.copy_record(key="json", to_key="dst")

    assert _names(folder, "dst") == ["dst.json"]
    assert len(_tags(folder)) == 1
    assert await _record(store, "dst") == (b"[]", JSON, copied)


async def test_tags_go_with_their_files(storage_client: FileSystemStorageClient, folder: Path) -> None:
    store = await _store(storage_client)
    await store.set_record(key="src", value=b"1", content_type=JSON)
    for key in ("a", "b", "c", "k" * 900):
        await store.copy_record(key="src", to_key=key)
    assert len(_tags(folder)) == 4

    await store.delete_record(key="a")
    await store.set_record(key="b", value=b"2", content_type=JSON)
    await store.set_record(key="c", value=b"text", content_type=TEXT)
    assert len(_tags(folder)) == 1
    await store.purge()
    assert _tags(folder) == []
    assert [info async for info in store.iterate_keys()] == []


async def test_a_long_key_copied_is_read_by_a_new_process(
    storage_client: FileSystemStorageClient, restart: Callable[[], FileSystemStorageClient]
) -> None:
    store = await _store(storage_client)
    long_key = "long/" * 200
    await store.set_record(key="src", value=b"1", content_type=JSON)
    copied = await store.copy_record(key="src", to_key=long_key)
    back = await store.copy_record(key=long_key, to_key="back", if_version=copied)

    other = await _store(restart())
    assert await _record(other, long_key) == (b"1", JSON, copied)
    assert await _record(other, "back") == (b"1", JSON, back)


# --- other processes ----------------------------------------------------------------------------------


async def test_a_process_with_a_warm_index_sees_the_copy(
    storage_client: FileSystemStorageClient, restart: Callable[[], FileSystemStorageClient]
) -> None:
    store = await _store(storage_client)
    source = await store.set_record(key="src", value=b"new", content_type=JSON)
    await store.set_record(key="dst", value=b"old", content_type=TEXT)
    other = await _store(restart())  # another process: an index of its own, built by these reads
    assert (await _record(other, "dst") or (b"",))[0] == b"old"
    assert await other.get_record(key="fresh") is None

    copied = await store.copy_record(key="src", to_key="dst", if_version=source)
    fresh = await store.copy_record(key="src", to_key="fresh")

    assert await _record(other, "dst") == (b"new", JSON, copied)
    assert await _record(other, "fresh") == (b"new", JSON, fresh)
    assert await _record(other, "src") == (b"new", JSON, source)
    assert [(info.key, info.size) async for info in other.iterate_keys()] == [("dst", 3), ("fresh", 3), ("src", 3)]
    again = await other.copy_record(key="dst", to_key="fresh", if_version=copied)
    assert await _record(store, "fresh") == (b"new", JSON, again)
    written = await other.set_record(key="dst", value=b"theirs", content_type=JSON, if_version=copied)
    assert await _record(store, "dst") == (b"theirs", JSON, written)


READER = textwrap.dedent(
    """
    import asyncio, json, sys
    from recoverable.storages import FileSystemStorageClient

    async def main():
        store = await FileSystemStorageClient(storage_dir=sys.argv[1]).open_key_value_store_client(name="copies")
        record = await store.get_record(key=sys.argv[2])
        print(json.dumps([record.value.decode(), record.content_type, record.version]))

    asyncio.run(main())
    """
)


async def test_a_child_process_reads_the_copy_with_its_version(
    storage_client: FileSystemStorageClient, storage_dir: Path, python: str, child_env: dict[str, str]
) -> None:
    store = await _store(storage_client)
    await store.set_record(key="src", value=b"1", content_type=JSON)
    copied = await store.copy_record(key="src", to_key="dst")

    child = await asyncio.create_subprocess_exec(
        python, "-c", READER, str(storage_dir), "dst", env=child_env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await child.communicate()

    assert child.returncode == 0
    assert json.loads(out) == ["1", JSON, copied]


COPIER = textwrap.dedent(
    """
    import asyncio, sys
    from recoverable.storages import FileSystemStorageClient

    async def main():
        store = await FileSystemStorageClient(storage_dir=sys.argv[1]).open_key_value_store_client(name="copies")
        version = await store.set_record(key="state", value=b"0" * 100_000, content_type="application/json")
        i = 0
        while True:
            i += 1
            await store.copy_record(key="state", to_key=f"state.~history.{i % 3}", if_version=version)
            value = str(i).encode() * (100_000 // len(str(i)))
            version = await store.set_record(
                key="state", value=value, content_type="application/json", if_version=version
            )
            if i == 3:
                print("copying", flush=True)

    asyncio.run(main())
    """
)


def _whole(value: bytes) -> bool:
    """Whether `value` is one the copier wrote: a number repeated to about 100 kB."""
    return any(value == value[:n] * (100_000 // n) for n in range(1, 8))


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.1])
async def test_sigkill_mid_copy_leaves_whole_records_and_distinct_versions(
    *,
    storage_dir: Path,
    folder: Path,
    python: str,
    child_env: dict[str, str],
    restart: Callable[[], FileSystemStorageClient],
    delay: float,
) -> None:
    child = await asyncio.create_subprocess_exec(
        python, "-c", COPIER, str(storage_dir), env=child_env, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert await child.stdout.readline() == b"copying\n"
        await asyncio.sleep(delay)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.communicate()
    assert child.returncode == -signal.SIGKILL

    store = await _store(restart())
    records = {info.key: await store.get_record(key=info.key) async for info in store.iterate_keys()}
    assert set(records) == {"state", "state.~history.0", "state.~history.1", "state.~history.2"}
    for key, record in records.items():
        assert record is not None
        assert _whole(record.value), key
    assert len({record.version for record in records.values() if record is not None}) == len(records)
    # The next write sweeps what the kill left: temporary links, and tags no record has.
    await store.set_record(key="after", value=b"{}", content_type=JSON)
    assert _temp_files(folder) == []
    tagged = [info.key async for info in store.iterate_keys() if info.key.startswith("state.~history.")]
    assert len(_tags(folder)) <= len(tagged)


# --- where no hard link is made -------------------------------------------------------------------------


async def test_a_file_system_without_hard_links_gets_the_bytes_written(
    storage_client: FileSystemStorageClient, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store(storage_client)
    source = await store.set_record(key="src", value=b"[1]", content_type=JSON)

    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(_copies.os, "link", no_links)
    copied = await store.copy_record(key="src", to_key="dst", if_version=source)

    assert copied not in (None, source)
    assert not os.path.samestat(os.stat(folder / "src.json"), os.stat(folder / "dst.json"))
    assert await _record(store, "dst") == (b"[1]", JSON, copied)
    assert _tags(folder) == []
    assert _temp_files(folder) == []


async def test_a_failing_link_leaves_the_destination_and_no_tag(
    storage_client: FileSystemStorageClient, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store(storage_client)
    await store.set_record(key="src", value=b"[1]", content_type=JSON)
    before = await store.set_record(key="dst", value=b"old", content_type=TEXT)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_copies.os, "link", broken)
    with pytest.raises(StorageBackendError, match="could not copy record 'src' to record 'dst'"):
        await store.copy_record(key="src", to_key="dst")
    monkeypatch.undo()

    assert await _record(store, "dst") == (b"old", TEXT, before)
    assert _tags(folder) == []
    assert _temp_files(folder) == []


def _write_crawlee_store(stores_dir: Path) -> Path:
    crawlee = stores_dir / "crawlee"
    crawlee.mkdir(parents=True)
    metadata = {"id": "crawleeStoreId123", "name": "crawlee", "created_at": "2025-01-02T03:04:05Z"}
    (crawlee / "__metadata__.json").write_text(json.dumps(metadata))
    (crawlee / "STATE").write_bytes(b'{"n": 1}')
    sidecar = {"key": "STATE", "content_type": JSON, "size": 8}
    (crawlee / "STATE.__metadata__.json").write_text(json.dumps(sidecar))
    return crawlee


async def test_a_crawlee_store_gets_a_copy_in_crawlee_s_layout(
    storage_client: FileSystemStorageClient, stores_dir: Path
) -> None:
    crawlee = _write_crawlee_store(stores_dir)
    store = await storage_client.open_key_value_store_client(name="crawlee")
    source = await store.get_record(key="STATE")
    assert source is not None

    copied = await store.copy_record(key="STATE", to_key="STATE.backup", if_version=source.version)

    assert copied not in (None, source.version)
    assert not os.path.samestat(os.stat(crawlee / "STATE"), os.stat(crawlee / "STATE.backup"))
    assert json.loads((crawlee / "STATE.backup.__metadata__.json").read_text()) == {
        "key": "STATE.backup",
        "content_type": JSON,
        "size": 8,
    }
    assert await _record(store, "STATE.backup") == (b'{"n": 1}', JSON, copied)
    assert _tags(crawlee) == []


async def test_a_crawlee_record_in_this_library_s_store_is_copied_as_bytes(
    storage_client: FileSystemStorageClient, folder: Path
) -> None:
    store = await _store(storage_client)
    (folder / "CRAWLEE_STATE").write_bytes(b'{"requestsFinished": 7}')
    (folder / "CRAWLEE_STATE.__metadata__.json").write_text(
        json.dumps({"key": "CRAWLEE_STATE", "content_type": JSON, "size": 23})
    )

    copied = await store.copy_record(key="CRAWLEE_STATE", to_key="copy")

    assert await _record(store, "copy") == (b'{"requestsFinished": 7}', JSON, copied)
    assert not os.path.samestat(os.stat(folder / "CRAWLEE_STATE"), os.stat(folder / "copy.json"))


# --- links and folders swapped in: refused, never followed -------------------------------------------


@pytest.mark.parametrize("swap", ["link", "folder"])
@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
async def test_a_source_swapped_for_a_link_or_a_folder_is_refused(
    storage_client: FileSystemStorageClient,
    folder: Path,
    outside: Path,
    restart: Callable[[], FileSystemStorageClient],
    swap: str,
    *,
    cold: bool,
) -> None:
    store = await _store(storage_client)
    source = await store.set_record(key="src", value=b"1", content_type=JSON)
    before = await store.set_record(key="dst", value=b"old", content_type=TEXT)
    assert await store.get_record(key="src") is not None  # warm: the index knows the file
    record = folder / "src.json"
    if swap == "link":
        _swap_for_link(record, outside)
    else:
        record.unlink()
        record.mkdir()
    if cold:
        store = await _store(restart())

    for if_version in (None, source):
        with pytest.raises(StorageBackendError) as info:
            await store.copy_record(key="src", to_key="dst", if_version=if_version)
        assert str(record) in str(info.value)
        assert ("symbolic link" if swap == "link" else "directory") in str(info.value)

    assert await _record(store, "dst") == (b"old", TEXT, before)
    assert _untouched(outside)
    assert record.is_symlink() if swap == "link" else record.is_dir()
    assert _tags(folder) == []
    assert _temp_files(folder) == []


@pytest.mark.parametrize("swap", ["link", "folder"])
@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
async def test_a_destination_swapped_for_a_link_or_a_folder_is_refused(
    storage_client: FileSystemStorageClient,
    folder: Path,
    outside: Path,
    restart: Callable[[], FileSystemStorageClient],
    swap: str,
    *,
    cold: bool,
) -> None:
    store = await _store(storage_client)
    source = await store.set_record(key="src", value=b"1", content_type=JSON)
    await store.set_record(key="dst", value=b"old", content_type=JSON)
    record = folder / "dst.json"
    if swap == "link":
        _swap_for_link(record, outside)
    else:
        record.unlink()
        record.mkdir()
        (record / "inside").write_bytes(b"kept")
    if cold:
        store = await _store(restart())

    with pytest.raises(StorageBackendError) as info:
        await store.copy_record(key="src", to_key="dst")
    assert str(record) in str(info.value)
    assert ("symbolic link" if swap == "link" else "directory") in str(info.value)

    assert _untouched(outside)
    if swap == "link":
        assert os.readlink(record) == str(outside)
    else:
        assert (record / "inside").read_bytes() == b"kept"
    assert await _record(store, "src") == (b"1", JSON, source)
    assert _tags(folder) == []
    assert _temp_files(folder) == []


async def test_a_source_swapped_for_a_link_while_it_is_copied_is_never_followed(
    storage_client: FileSystemStorageClient, folder: Path, outside: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _store(storage_client)
    await store.set_record(key="src", value=b"1", content_type=JSON)
    before = await store.set_record(key="dst", value=b"old", content_type=TEXT)
    write_tag = _own_layout.write_tag

    def swap_then_tag(name: str, version: str, folder_fd: int) -> str:
        # Another program swaps the source for a link after its version was checked, before it is linked.
        _swap_for_link(folder / "src.json", outside)
        return write_tag(name, version, folder_fd)

    monkeypatch.setattr(_own_layout, "write_tag", swap_then_tag)
    with pytest.raises(StorageBackendError) as info:
        await store.copy_record(key="src", to_key="dst")

    assert "symbolic link" in str(info.value)
    assert (folder / "src.json").is_symlink()
    assert _untouched(outside)
    assert not (folder / "dst.json").exists()
    monkeypatch.undo()
    assert await _record(store, "dst") == (b"old", TEXT, before)
    assert _tags(folder) == []
    assert _temp_files(folder) == []


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
async def test_a_tag_swapped_for_a_link_refuses_its_record_and_is_never_followed(
    storage_client: FileSystemStorageClient,
    folder: Path,
    outside: Path,
    restart: Callable[[], FileSystemStorageClient],
    *,
    cold: bool,
) -> None:
    store = await _store(storage_client)
    await store.set_record(key="src", value=b"1", content_type=JSON)
    await store.copy_record(key="src", to_key="dst")
    (tag,) = _tags(folder)
    _swap_for_link(folder / tag, outside)
    # A file of the copy's name and version changed since this process looked: the tag is looked up again.
    await store.set_record(key="src", value=b"2", content_type=JSON)
    if cold:
        store = await _store(restart())

    with pytest.raises(StorageBackendError) as info:
        await store.get_record(key="dst")
    assert str(folder / tag) in str(info.value)
    assert "symbolic link" in str(info.value)
    with pytest.raises(StorageBackendError):
        await store.set_record(key="dst", value=b"3", content_type=JSON)
    assert _untouched(outside)
    assert (folder / tag).is_symlink()
    assert await _record(store, "src") is not None


async def test_a_read_meeting_a_rewrite_between_its_open_and_its_tag_reads_again(
    storage_client: FileSystemStorageClient,
    folder: Path,
    restart: Callable[[], FileSystemStorageClient],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A copy's tag goes with its file: a reader that opened the copy before a rewrite finds no tag, and reads again.

    It never gives the copy's bytes with the untagged version of their file (the source's version).
    """
    store = await _store(storage_client)
    source = await store.set_record(key="src", value=b"copied", content_type=JSON)
    copied = await store.copy_record(key="src", to_key="dst")
    reader = await _store(restart())
    assert await _record(reader, "dst") == (b"copied", JSON, copied)
    await store.set_record(key="src", value=b"new source", content_type=JSON)  # the copy's inode changes (ctime)

    copy_tag = StoreFolder.copy_tag
    rewritten: list[str] = []

    def rewrite_then_look(self: StoreFolder, name: str, version: str, folder_fd: int | None) -> str | None:
        if not rewritten and folder_fd is None:
            # Another process rewrites the copy after this reader opened it, before it looks its tag up.
            other = StoreDir(folder, label="copies", case_insensitive=False)
            wait = LockWait(timeout=10)
            rewritten.append(other.write("dst", b"rewritten", JSON, if_version=None, if_absent=False, wait=wait))
        return copy_tag(self, name, version, folder_fd)

    monkeypatch.setattr(StoreFolder, "copy_tag", rewrite_then_look)
    record = await reader.get_record(key="dst")

    assert rewritten
    assert record is not None
    assert (record.value, record.version) == (b"rewritten", rewritten[0])
    assert record.version not in (source, copied)


async def test_a_scan_whose_listing_a_copy_overtook_still_finds_the_copy_s_tag(
    storage_client: FileSystemStorageClient, folder: Path
) -> None:
    """A scan lists the folder, then looks at each file: a copy landing in between is a file the listing missed
    the tag of. The scan must not note it untagged (its version would read as the source's, for as long as the
    file stays)."""
    store = await _store(storage_client)
    await store.set_record(key="src", value=b"1", content_type=JSON)
    await store.set_record(key="dst", value=b"old", content_type=JSON)
    listing = _listing(folder)  # before the copy; each entry's stat is taken when the scan asks for it

    copied = await store.copy_record(key="src", to_key="dst")

    record = RecordFile("dst.json", JSON, 0, 0)
    _note(record, listing, folder)
    assert record.seen is not None
    assert tagged(record.seen[0], record.seen[2]) == copied


def _listing(folder: Path) -> dict[str, os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        return {entry.name: entry for entry in entries}


def _note(record: RecordFile, listing: dict[str, os.DirEntry[str]], folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        _note_files({"dst": record}, listing, fd)
    finally:
        os.close(fd)
