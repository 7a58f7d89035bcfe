"""No read and no write follows a link out of a store, warm or cold; links and folders never read as "no record".

Each test swaps a symbolic link, a folder or a FIFO into a place the store reads or writes, once after a read
(the index of the folder is built: warm) and once for a new client (cold), and checks that the operation
raises a `StorageBackendError` naming the path, and that the outside file and the link are left as they were.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest
from state.support import Progress, quiet_event_manager

from recoverable import RecoverableState
from recoverable.errors import StorageBackendError, StorageError, StoreNotFoundError
from recoverable.storages import FileSystemStorageClient, KeyValueStore
from recoverable.storages._file_system._layout import key_hash

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

SECRET = b'{"secret": "outside the store"}'
LONG_KEY = "k" * 300


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the storage folder that no store may read or write."""
    path = tmp_path / "outside" / "secret.json"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


async def _open(storage_dir: Path, name: str = "links") -> KeyValueStore:
    return await KeyValueStore.open(name=name, storage_client=FileSystemStorageClient(storage_dir=storage_dir))


def _swap_for_link(path: Path, target: Path) -> None:
    """Replace `path` by a symbolic link to `target` in one step, as an attacker racing the store would."""
    temp = path.with_name(path.name + ".swap")
    temp.symlink_to(target)
    os.replace(temp, path)


def _untouched(outside: Path) -> bool:
    return outside.read_bytes() == SECRET


def _assert_names(error: BaseException, path: Path, what: str) -> None:
    message = str(error)
    assert isinstance(error, StorageBackendError), repr(error)
    assert str(path) in message, message
    assert what in message, message


async def _warm(storage_dir: Path) -> tuple[KeyValueStore, Path]:
    kvs = await _open(storage_dir)
    await kvs.set_value("STATE", {"pages": 3})
    assert await kvs.get_value("STATE") == {"pages": 3}  # the index is built, the record read once
    return kvs, storage_dir / "key_value_stores" / "links"


# --- a record that is a link ----------------------------------------------------------------------------


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
async def test_a_record_swapped_for_a_link_is_refused(
    storage_dir: Path, outside: Path, restart: Callable[[], FileSystemStorageClient], *, cold: bool
) -> None:
    kvs, folder = await _warm(storage_dir)
    record = folder / "STATE.json"
    _swap_for_link(record, outside)
    if cold:
        kvs = await KeyValueStore.open(name="links", storage_client=restart())

    for read in (kvs.get_value, kvs.get_record, kvs.record_exists):
        with pytest.raises(StorageBackendError) as info:
            await read("STATE")
        _assert_names(info.value, record, "symbolic link")
        assert "STATE" in str(info.value)
    with pytest.raises(StorageBackendError) as info:
        await kvs.set_value("STATE", {"pages": 4})
    _assert_names(info.value, record, "symbolic link")
    with pytest.raises(StorageBackendError):
        await kvs.delete_value("STATE")

    assert record.is_symlink()
    assert os.readlink(record) == str(outside)
    assert _untouched(outside)
    assert [k.key for k in await kvs.list_keys()] == ["STATE"]


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
async def test_a_record_swapped_for_a_folder_is_refused(
    storage_dir: Path, restart: Callable[[], FileSystemStorageClient], *, cold: bool
) -> None:
    kvs, folder = await _warm(storage_dir)
    record = folder / "STATE.json"
    record.unlink()
    record.mkdir()
    (record / "inside").write_bytes(b"kept")
    if cold:
        kvs = await KeyValueStore.open(name="links", storage_client=restart())

    with pytest.raises(StorageBackendError) as info:
        await kvs.get_value("STATE")
    _assert_names(info.value, record, "directory")
    with pytest.raises(StorageBackendError) as info:
        await kvs.set_value("STATE", {"pages": 4})
    _assert_names(info.value, record, "directory")
    assert (record / "inside").read_bytes() == b"kept"


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
async def test_a_fifo_in_a_records_place_neither_hangs_nor_reads_as_no_record(
    storage_dir: Path, restart: Callable[[], FileSystemStorageClient], *, cold: bool
) -> None:
    kvs, folder = await _warm(storage_dir)
    record = folder / "STATE.json"
    record.unlink()
    os.mkfifo(record)
    if cold:
        kvs = await KeyValueStore.open(name="links", storage_client=restart())

    with pytest.raises(StorageBackendError) as info:
        await asyncio.wait_for(kvs.get_value("STATE"), timeout=10)
    _assert_names(info.value, record, "FIFO")
    with pytest.raises(StorageBackendError):
        await asyncio.wait_for(kvs.set_value("STATE", 1), timeout=10)


async def test_a_new_link_in_a_records_place_is_refused_cold(storage_dir: Path, outside: Path) -> None:
    kvs = await _open(storage_dir)
    record = storage_dir / "key_value_stores" / "links" / "planted.txt"
    record.symlink_to(outside)

    with pytest.raises(StorageBackendError) as info:
        await kvs.get_value("planted")
    _assert_names(info.value, record, "symbolic link")


async def test_a_dangling_link_is_refused_and_never_created_through(storage_dir: Path, tmp_path: Path) -> None:
    kvs, folder = await _warm(storage_dir)
    target = tmp_path / "outside-new.json"
    _swap_for_link(folder / "STATE.json", target)

    with pytest.raises(StorageBackendError):
        await kvs.get_value("STATE")
    with pytest.raises(StorageBackendError):
        await kvs.set_value("STATE", {"pages": 4})
    assert not target.exists()


async def test_a_link_racing_with_reads_is_never_followed(storage_dir: Path, outside: Path) -> None:
    kvs, folder = await _warm(storage_dir)
    record = folder / "STATE.json"
    good = folder / "good.bak"
    good.write_bytes(record.read_bytes())
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            _swap_for_link(record, outside)
            time.sleep(0.0005)
            copy = folder / "copy.swap"
            copy.write_bytes(good.read_bytes())
            os.replace(copy, record)
            time.sleep(0.0005)

    swapper = threading.Thread(target=swap)
    swapper.start()
    seen: dict[str, int] = {"ok": 0, "refused": 0}
    refusals: set[str] = set()
    try:
        for _ in range(2000):
            try:
                record_read = await kvs.get_record("STATE")
            except StorageBackendError as exc:
                refusals.add(str(exc).split(": ", 1)[1].split(" to ", 1)[0].split(", not a", 1)[0])
                seen["refused"] += 1
                continue
            assert record_read is not None
            assert record_read.value == {"pages": 3}
            seen["ok"] += 1
    finally:
        stop.set()
        swapper.join()
    assert _untouched(outside)
    assert seen["ok"] > 0
    assert seen["refused"] > 0, "the link was never met: the race did not happen"
    assert refusals == {f"{record} is a symbolic link"}


# --- Crawlee records and their sidecars -------------------------------------------------------------------


def _crawlee_record(folder: Path, key: str, data: bytes, content_type: str = "application/json") -> Path:
    file_name = quote(key, safe="")
    (folder / file_name).write_bytes(data)
    sidecar = {"key": key, "content_type": content_type, "size": len(data)}
    (folder / f"{file_name}.__metadata__.json").write_text(json.dumps(sidecar))
    return folder / file_name


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
async def test_a_crawlee_record_that_is_a_link_is_refused(
    storage_dir: Path, outside: Path, restart: Callable[[], FileSystemStorageClient], *, cold: bool
) -> None:
    kvs, folder = await _warm(storage_dir)
    record = _crawlee_record(folder, "CRAWLEE_STATE", b'{"requestsFinished": 7}')
    assert await kvs.get_value("CRAWLEE_STATE") == {"requestsFinished": 7}
    _swap_for_link(record, outside)
    if cold:
        kvs = await KeyValueStore.open(name="links", storage_client=restart())

    with pytest.raises(StorageBackendError) as info:
        await kvs.get_value("CRAWLEE_STATE")
    _assert_names(info.value, record, "symbolic link")
    with pytest.raises(StorageBackendError):
        await kvs.set_value("CRAWLEE_STATE", {"requestsFinished": 8})
    assert record.is_symlink()
    assert _untouched(outside)


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
async def test_a_crawlee_sidecar_that_is_a_link_is_refused(
    storage_dir: Path, tmp_path: Path, restart: Callable[[], FileSystemStorageClient], *, cold: bool
) -> None:
    kvs, folder = await _warm(storage_dir)
    record = _crawlee_record(folder, "CRAWLEE_STATE", b'{"requestsFinished": 7}')
    sidecar = folder / "CRAWLEE_STATE.__metadata__.json"
    # A sidecar outside the store that claims the record is another key, of another type.
    fake = tmp_path / "fake-sidecar.json"
    fake.write_text(json.dumps({"key": "STATE", "content_type": "text/plain; charset=utf-8"}))
    assert await kvs.get_value("CRAWLEE_STATE") == {"requestsFinished": 7}
    _swap_for_link(sidecar, fake)
    if cold:
        kvs = await KeyValueStore.open(name="links", storage_client=restart())
        with pytest.raises(StorageBackendError) as info:
            await kvs.get_value("CRAWLEE_STATE")
        _assert_names(info.value, sidecar, "symbolic link")
    else:
        # The index learnt the key and type while the sidecar was a file: the record's own file is still read.
        assert await kvs.get_value("CRAWLEE_STATE") == {"requestsFinished": 7}

    assert await kvs.get_value("STATE") == {"pages": 3}
    with pytest.raises(StorageBackendError) as info:
        await kvs.set_value("CRAWLEE_STATE", {"requestsFinished": 8})
    _assert_names(info.value, sidecar, "symbolic link")
    assert record.read_bytes() == b'{"requestsFinished": 7}'
    assert sidecar.is_symlink()


async def test_a_crawlee_record_held_in_a_file_our_layout_needs_is_not_copied_through_a_link(
    storage_dir: Path, outside: Path
) -> None:
    kvs, folder = await _warm(storage_dir)
    # Crawlee's record of the key "page.html" sits in the file that our layout gives the key "page" as HTML.
    record = _crawlee_record(folder, "page.html", b"<p>crawlee</p>", "text/html; charset=utf-8")
    _swap_for_link(record, outside)

    with pytest.raises(StorageBackendError):
        await kvs.set_value("page", "<p>ours</p>", "text/html; charset=utf-8")
    assert record.is_symlink()
    assert _untouched(outside)
    for info in await kvs.list_keys():
        if info.key != "page.html":
            value = await kvs.get_value(info.key)
            assert value != json.loads(SECRET)


# --- the other files and folders of a store ---------------------------------------------------------------


@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
async def test_a_long_keys_file_that_is_a_link_is_refused(
    storage_dir: Path, tmp_path: Path, restart: Callable[[], FileSystemStorageClient], *, cold: bool
) -> None:
    kvs, folder = await _warm(storage_dir)
    await kvs.set_value(LONG_KEY, {"long": True})
    key_file = folder / ".keys" / key_hash(LONG_KEY)
    fake = tmp_path / "fake-key"
    fake.write_text("leaked-from-outside")
    _swap_for_link(key_file, fake)
    if cold:
        kvs = await KeyValueStore.open(name="links", storage_client=restart())
        with pytest.raises(StorageBackendError) as info:
            await kvs.get_value(LONG_KEY)
        _assert_names(info.value, key_file, "symbolic link")
    else:
        # The index learnt the key while its file was a file: the record's own file is still read.
        assert await kvs.get_value(LONG_KEY) == {"long": True}

    with pytest.raises(StorageBackendError) as info:
        await kvs.set_value(LONG_KEY, {"long": False})
    _assert_names(info.value, key_file, "symbolic link")
    assert "leaked-from-outside" not in [k.key for k in await kvs.list_keys()]
    assert fake.read_text() == "leaked-from-outside"
    assert key_file.is_symlink()


async def test_a_long_keys_folder_that_is_a_link_is_neither_read_nor_written(
    storage_dir: Path, tmp_path: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    kvs, folder = await _warm(storage_dir)
    await kvs.set_value(LONG_KEY, {"long": True})
    elsewhere = tmp_path / "elsewhere-keys"
    os.replace(folder / ".keys", elsewhere)
    (folder / ".keys").symlink_to(elsewhere)
    before = sorted(p.name for p in elsewhere.iterdir())
    kvs = await KeyValueStore.open(name="links", storage_client=restart())

    with pytest.raises(StorageBackendError) as info:
        await kvs.get_value(LONG_KEY)
    _assert_names(info.value, folder / ".keys", "symbolic link")
    with pytest.raises(StorageBackendError):
        await kvs.set_value("j" * 300, 1)
    assert sorted(p.name for p in elsewhere.iterdir()) == before
    assert await kvs.get_value("STATE") == {"pages": 3}


async def test_a_lock_file_that_is_a_link_is_never_written_through(storage_dir: Path, outside: Path) -> None:
    kvs, folder = await _warm(storage_dir)
    kvs2_client = FileSystemStorageClient(storage_dir=storage_dir)
    (folder / ".lock").unlink()
    (folder / ".lock").symlink_to(outside)
    from recoverable.storages._file_system import _store_dir  # noqa: PLC0415 - only to forget this process's index

    _store_dir._registry.clear()  # a new process would not have the lock file open
    kvs = await KeyValueStore.open(name="links", storage_client=kvs2_client)

    with pytest.raises(StorageBackendError) as info:
        await kvs.set_value("STATE", {"pages": 4})
    _assert_names(info.value, folder / ".lock", "symbolic link")
    assert _untouched(outside)


async def test_store_metadata_that_is_a_link_is_refused(storage_dir: Path, tmp_path: Path) -> None:
    kvs = await _open(storage_dir, "meta")
    metadata = storage_dir / "key_value_stores" / "meta" / "__metadata__.json"
    fake = tmp_path / "fake-metadata.json"
    fake.write_bytes(metadata.read_bytes())
    _swap_for_link(metadata, fake)
    client = FileSystemStorageClient(storage_dir=storage_dir)

    with pytest.raises(StorageBackendError) as info:
        await client.open_key_value_store_client(name="meta")
    _assert_names(info.value, metadata, "symbolic link")
    assert await client.list_key_value_stores() == []
    with pytest.raises(StoreNotFoundError):
        await client.open_key_value_store_client(id=kvs.id)
    assert metadata.is_symlink()


async def test_a_store_folder_that_is_a_link_is_refused(storage_dir: Path, tmp_path: Path) -> None:
    await _open(storage_dir, "real")
    stores = storage_dir / "key_value_stores"
    elsewhere = tmp_path / "elsewhere-store"
    os.replace(stores / "real", elsewhere)
    (stores / "real").symlink_to(elsewhere)
    client = FileSystemStorageClient(storage_dir=storage_dir)

    with pytest.raises(StorageBackendError) as info:
        await client.open_key_value_store_client(name="real")
    _assert_names(info.value, stores / "real", "symbolic link")
    assert await client.list_key_value_stores() == []
    assert (stores / "real").is_symlink()


async def test_a_store_folder_swapped_for_a_link_while_open_is_refused(storage_dir: Path, tmp_path: Path) -> None:
    kvs, folder = await _warm(storage_dir)
    elsewhere = tmp_path / "elsewhere-store"
    os.replace(folder, elsewhere)
    folder.symlink_to(elsewhere)

    with pytest.raises(StorageBackendError) as info:
        await kvs.get_value("STATE")
    _assert_names(info.value, folder, "symbolic link")
    with pytest.raises(StorageBackendError):
        await kvs.set_value("new", 1)
    assert sorted(p.name for p in elsewhere.iterdir() if not p.name.startswith(".")) == [
        "STATE.json",
        "__metadata__.json",
    ]


async def test_the_storage_folder_and_key_value_stores_may_be_links(tmp_path: Path) -> None:
    real_root = tmp_path / "disk" / "storage"
    (real_root / "key_value_stores").mkdir(parents=True)
    linked_root = tmp_path / "storage-link"
    linked_root.symlink_to(real_root)
    kvs = await _open(linked_root, "through-links")
    await kvs.set_value("k", 1)

    other = tmp_path / "other-root"
    other.mkdir()
    (other / "key_value_stores").symlink_to(real_root / "key_value_stores")
    again = await KeyValueStore.open(name="through-links", storage_client=FileSystemStorageClient(storage_dir=other))
    assert await again.get_value("k") == 1
    assert (real_root / "key_value_stores" / "through-links" / "k.json").read_bytes() == b"1"


async def test_a_hard_link_is_read_and_a_write_never_changes_the_other_name(storage_dir: Path, tmp_path: Path) -> None:
    kvs, folder = await _warm(storage_dir)
    other_name = tmp_path / "hard-linked.json"
    os.link(folder / "STATE.json", other_name)
    kvs = await KeyValueStore.open(name="links", storage_client=FileSystemStorageClient(storage_dir=storage_dir))

    assert await kvs.get_value("STATE") == {"pages": 3}
    await kvs.set_value("STATE", {"pages": 4})

    assert json.loads(other_name.read_bytes()) == {"pages": 3}
    assert await kvs.get_value("STATE") == {"pages": 4}


# --- through RecoverableState ---------------------------------------------------------------------------


@pytest.mark.parametrize("swap", ["link", "folder"])
@pytest.mark.parametrize("cold", [False, True], ids=["warm", "cold"])
async def test_a_state_whose_record_is_a_link_or_a_folder_raises_and_leaves_everything(
    storage_dir: Path,
    outside: Path,
    restart: Callable[[], FileSystemStorageClient],
    swap: str,
    *,
    cold: bool,
) -> None:
    kvs = await _open(storage_dir)

    def make(store: KeyValueStore) -> RecoverableState[Progress]:
        return RecoverableState(
            default_state=Progress(seen=["default"]),
            persist_state_key="CRAWL",
            key_value_store=store,
            event_manager=quiet_event_manager(),
        )

    state = make(kvs)
    await state.initialize()
    state.current_value.pages_done = 5
    await state.teardown()
    folder = storage_dir / "key_value_stores" / "links"
    record = folder / "CRAWL.json"
    if swap == "link":
        _swap_for_link(record, outside)
    else:
        record.unlink()
        record.mkdir()
    if cold:
        kvs = await KeyValueStore.open(name="links", storage_client=restart())

    state = make(kvs)
    with pytest.raises(StorageBackendError) as info:
        await state.initialize()
    _assert_names(info.value, record, "symbolic link" if swap == "link" else "directory")
    assert not state.is_initialized
    assert _untouched(outside)
    if swap == "link":
        assert os.readlink(record) == str(outside)
    else:
        assert record.is_dir()
        assert list(record.iterdir()) == []


# --- through a real `recoverable serve` -------------------------------------------------------------------


@pytest.fixture
def serve_folder(python: str, child_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[Path], str]]:
    """`serve_folder(storage_dir)` starts `recoverable serve` on it as a child process and returns its URL."""
    children: list[subprocess.Popen[str]] = []

    def start(storage_dir: Path) -> str:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        child = subprocess.Popen(
            [python, "-m", "recoverable.cli", "serve", "--port", str(port), "--storage-dir", str(storage_dir)],
            env=child_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        children.append(child)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert child.poll() is None, child.communicate()[0]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return url
            except OSError:
                time.sleep(0.05)
        pytest.fail("recoverable serve did not listen within 30 s")

    yield start
    for child in children:
        child.kill()
        child.communicate(timeout=30)


async def test_recoverable_serve_never_returns_a_linked_file(
    storage_dir: Path, outside: Path, serve_folder: Callable[[Path], str]
) -> None:
    import httpx  # noqa: PLC0415 - the server's extra

    kvs, folder = await _warm(storage_dir)
    url = serve_folder(storage_dir)
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        listed = (await http.get("/v2/key-value-stores")).json()["data"]["items"]
        store_id = next(s["id"] for s in listed if s["name"] == "links")
        path = f"/v2/key-value-stores/{store_id}/records/STATE"
        warm = await http.get(path)
        assert warm.status_code == 200
        assert warm.json() == {"pages": 3}

        _swap_for_link(folder / "STATE.json", outside)
        after_warm = await http.get(path)
        (folder / "planted.json").symlink_to(outside)
        cold = await http.get(f"/v2/key-value-stores/{store_id}/records/planted")

        for answer in (after_warm, cold):
            assert SECRET not in answer.content
            assert answer.status_code == 500, answer.text
            assert "symbolic link" in answer.text
        put = await http.put(path, content=b'{"pages": 9}', headers={"content-type": "application/json"})
        assert put.status_code == 500
        for hostile in ["%2e%2e", "..", ".", "%2e", "a%00b", "..%2Foutside", "%2e%2e%2f%2e%2e"]:
            answer = await http.get(f"/v2/key-value-stores/{hostile}/records/STATE")
            assert answer.status_code in (400, 404), (hostile, answer.status_code, answer.text)
            assert SECRET not in answer.content
    assert _untouched(outside)
    assert (folder / "STATE.json").is_symlink()
    del kvs


# --- the adversary's other moves --------------------------------------------------------------------------


@pytest.mark.parametrize("place", ["sidecar", "metadata", "long key", "lock"])
async def test_a_fifo_in_any_place_of_a_store_is_refused_without_hanging(
    storage_dir: Path, restart: Callable[[], FileSystemStorageClient], place: str
) -> None:
    kvs, folder = await _warm(storage_dir)
    await kvs.set_value(LONG_KEY, 1)
    _crawlee_record(folder, "CRAWLEE_STATE", b"{}")
    path, key = {
        "sidecar": (folder / "CRAWLEE_STATE.__metadata__.json", "CRAWLEE_STATE"),
        "metadata": (folder / "__metadata__.json", "STATE"),
        "long key": (folder / ".keys" / key_hash(LONG_KEY), LONG_KEY),
        "lock": (folder / ".lock", "STATE"),
    }[place]
    path.unlink()
    os.mkfifo(path)
    client = restart()

    async def read() -> object:
        store = await KeyValueStore.open(name="links", storage_client=client)
        return await store.get_value(key)

    with pytest.raises(StorageBackendError) as info:
        await asyncio.wait_for(read(), timeout=10)
    _assert_names(info.value, path, "FIFO")


async def test_a_socket_in_a_records_place_is_refused(storage_dir: Path) -> None:
    kvs, folder = await _warm(storage_dir)
    record = folder / "STATE.json"
    record.unlink()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(record))
        with pytest.raises(StorageBackendError) as info:
            await kvs.get_value("STATE")
        _assert_names(info.value, record, "socket")
        with pytest.raises(StorageBackendError):
            await kvs.record_exists("STATE")


async def test_a_dangling_lock_link_creates_nothing_outside(storage_dir: Path, tmp_path: Path) -> None:
    await _warm(storage_dir)
    folder = storage_dir / "key_value_stores" / "links"
    target = tmp_path / "made-through-the-lock"
    (folder / ".lock").unlink()
    (folder / ".lock").symlink_to(target)
    from recoverable.storages._file_system import _store_dir  # noqa: PLC0415 - only to forget this process's index

    _store_dir._registry.clear()  # a new process would not have the lock file open
    kvs = await KeyValueStore.open(name="links", storage_client=FileSystemStorageClient(storage_dir=storage_dir))

    with pytest.raises(StorageBackendError, match=r"\.lock is a symbolic link"):
        await kvs.set_value("STATE", 1)
    assert not target.exists()


async def test_writers_never_sweep_a_folder_the_long_keys_link_points_to(
    storage_dir: Path, tmp_path: Path, restart: Callable[[], FileSystemStorageClient]
) -> None:
    await _warm(storage_dir)
    folder = storage_dir / "key_value_stores" / "links"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".~tmp.not-ours").write_text("kept")
    (folder / ".keys").symlink_to(elsewhere)
    kvs = await KeyValueStore.open(name="links", storage_client=restart())

    await kvs.set_value("short", 1)
    with pytest.raises(StorageBackendError, match=r"\.keys is a symbolic link"):
        await kvs.set_value(LONG_KEY, 1)
    assert sorted(p.name for p in elsewhere.iterdir()) == [".~tmp.not-ours"]


async def test_a_store_folder_swapped_for_a_link_while_writing_is_never_written_through(
    storage_dir: Path, tmp_path: Path
) -> None:
    """Writes change files relative to the folder opened under the writers' lock: a link swapped in for the
    store's folder in the middle of a write is never followed, whatever the moment."""
    kvs, folder = await _warm(storage_dir)
    await kvs.set_value("k" * 300, 1)  # the long-keys folder exists too
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / ".keys").mkdir()
    real = folder.with_name("links.real")
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        while not stop.is_set():
            os.replace(folder, real)
            link = folder.with_name("links.link")
            link.symlink_to(decoy)
            os.replace(link, folder)
            time.sleep(0.0002)
            os.unlink(folder)
            os.replace(real, folder)  # the real folder back in place of the link
            swaps += 1
            time.sleep(0.001)

    swapper = threading.Thread(target=swap)
    swapper.start()
    outcomes = {"written": 0, "refused": 0}
    try:
        for i in range(600):
            try:
                await kvs.set_value(f"key-{i % 7}", {"i": i})
                await kvs.set_value("k" * 300 + str(i % 3), i)
                outcomes["written"] += 1
            except StorageError:  # refused, or the folder was briefly gone
                outcomes["refused"] += 1
    finally:
        stop.set()
        swapper.join()
    assert swaps > 50
    assert outcomes["written"] > 0
    assert sorted(p.name for p in decoy.rglob("*")) == [".keys"], "a write went through the link"
    assert (folder / "key-0.json").is_file()
