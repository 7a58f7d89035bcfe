"""Real Redis and PostgreSQL servers on loopback, for the tests of the Redis and SQL storage clients.

`redis_url()` and `postgres_url()` return the address of a server that runs for the whole test session:

- When `RECOVERABLE_TEST_REDIS_URL` / `RECOVERABLE_TEST_POSTGRES_URL` is set (CI sets them, see
  `.ci/services.sh`), that server is used. PostgreSQL gets a database of its own for the session
  (created here, dropped at the end); Redis keys of the session share a random prefix and are deleted
  at the end.
- Otherwise this module starts its own `redis-server` and PostgreSQL (`initdb` into a temporary folder,
  as the user `postgres` when running as root, trust authentication on 127.0.0.1, a free port) the first
  time one is asked for, and stops them when the test process exits. They also die with the test
  process if it is killed (parent-death signal).
- When a server binary is missing, the test is skipped with a message telling how to install it, except
  when the environment variable `CI` is set: then it fails, so that CI never skips these backends.

The variables are read when this module is imported (at collection), because every test runs with the
`RECOVERABLE_*` variables removed (see `tests/conftest.py`).

Everything here is synchronous (subprocesses, a thread for asyncpg) so that it can be called from a
factory running inside a test's event loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import glob
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

__all__ = ["IN_CI", "postgres_url", "redis_key_prefix", "redis_session_prefix", "redis_url", "sql_table_prefix"]

_T = TypeVar("_T")

IN_CI = bool(os.environ.get("CI"))
_ENV_REDIS_URL = os.environ.get("RECOVERABLE_TEST_REDIS_URL") or None
_ENV_POSTGRES_URL = os.environ.get("RECOVERABLE_TEST_POSTGRES_URL") or None
_SESSION = secrets.token_hex(4)
_START_TIMEOUT_SECS = 60.0


def _digest(seed: object) -> str:
    return hashlib.sha1(str(seed).encode(), usedforsecurity=False).hexdigest()[:12]


def redis_key_prefix(seed: object) -> str:
    """A Redis key prefix of its own for `seed` (a test's `tmp_path`): the same for the same seed, in this session."""
    return f"{redis_session_prefix()}-{_digest(seed)}"


def sql_table_prefix(seed: object) -> str:
    """A table prefix of its own for `seed` (a test's `tmp_path`), in the session's database."""
    return f"t{_digest(seed)}_"


# --- skipping and failing -------------------------------------------------------------------------------


class _UnavailableError(Exception):
    """A server cannot be had; remembered so that later tests skip or fail at once."""

    def __init__(self, message: str, *, missing_binary: bool) -> None:
        super().__init__(message)
        self.missing_binary = missing_binary


def _give_up(error: _UnavailableError) -> NoReturn:
    if error.missing_binary and not IN_CI:
        pytest.skip(str(error))
    pytest.fail(f"{error} (CI is set, so this backend must not be skipped)" if IN_CI else str(error), pytrace=False)


# --- processes --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_in_thread(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion on a loop of its own, in a thread: callable from inside a running loop."""
    result: list[_T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make()))
        except BaseException as exc:  # handed over to the calling thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="services-asyncio")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


@dataclass
class _Server:
    """A server this module started, and what to remove when it stops."""

    name: str
    processes: list[subprocess.Popen[bytes]]
    workdir: Path | None
    url: str
    log: Path | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)
    stop_signal: int = signal.SIGTERM

    def log_tail(self) -> str:
        if self.log is None:
            return ""
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        for cleanup in self.cleanups:
            with contextlib.suppress(Exception):
                cleanup()
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(self.stop_signal)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


_servers: dict[str, _Server] = {}
_failures: dict[str, _UnavailableError] = {}
_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    for server in _servers.values():
        server.stop()
    _servers.clear()


def _get(name: str, start: Callable[[], _Server]) -> str:
    with _lock:
        if name in _failures:
            _give_up(_failures[name])
        server = _servers.get(name)
        if server is None:
            try:
                server = start()
            except _UnavailableError as error:
                _failures[name] = error
                _give_up(error)
            _servers[name] = server
        return server.url


def _popen(args: list[str], *, log: Path, user: str | None = None) -> subprocess.Popen[bytes]:
    setpriv = shutil.which("setpriv")
    if setpriv is not None and threading.current_thread() is threading.main_thread():
        # The server gets SIGTERM when the test process dies, even by SIGKILL, so no server outlives a killed
        # test run (the parent-death signal of Linux, set by util-linux's setpriv just before it runs the server).
        args = [setpriv, "--pdeathsig", "TERM", "--", *args]
    with open(log, "ab") as out:
        return subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, user=user)


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[bytes], what: str, log_tail: Callable[[], str]
) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_SECS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _UnavailableError(
                f"{what} exited with code {process.returncode}:\n{log_tail()}", missing_binary=False
            )
        if ready():
            return
        time.sleep(0.05)
    process.kill()
    raise _UnavailableError(
        f"{what} did not become ready in {_START_TIMEOUT_SECS:.0f} s:\n{log_tail()}", missing_binary=False
    )


# --- Redis ------------------------------------------------------------------------------------------------


def redis_url() -> str:
    """The URL of a Redis server for this session (`redis://127.0.0.1:<port>/0`)."""
    return _get("redis", _start_redis)


def redis_session_prefix() -> str:
    """A key prefix part unique to this session, so that a shared server keeps sessions apart."""
    return f"rt{_SESSION}"


def _redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start_redis() -> _Server:
    if _ENV_REDIS_URL is not None:
        server = _Server(name="redis", processes=[], workdir=None, url=_ENV_REDIS_URL)
        server.cleanups.append(lambda: _delete_redis_session_keys(_ENV_REDIS_URL))
        return server
    binary = shutil.which("redis-server")
    if binary is None:
        raise _UnavailableError(
            "redis-server is not installed: install it (Debian/Ubuntu: `apt-get install redis-server`, macOS: "
            "`brew install redis`) or set RECOVERABLE_TEST_REDIS_URL=redis://host:port/db to test the Redis "
            "storage client",
            missing_binary=True,
        )
    workdir = Path(tempfile.mkdtemp(prefix="recoverable-redis-"))
    log = workdir / "redis.log"
    last: _UnavailableError | None = None
    for _ in range(5):
        port = _free_port()
        # The durable setting the Redis storage client documents: every write fsync'd before the reply.
        process = _popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(workdir),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
            ],
            log=log,
        )
        server = _Server(name="redis", processes=[process], workdir=workdir, url=f"redis://127.0.0.1:{port}/0", log=log)
        try:
            _wait_until(functools.partial(_redis_ping, "127.0.0.1", port), process, "redis-server", server.log_tail)
        except _UnavailableError as error:
            last = error
            if process.poll() is None:
                process.kill()
            continue
        return server
    shutil.rmtree(workdir, ignore_errors=True)
    assert last is not None
    raise last


def _delete_redis_session_keys(url: str) -> None:
    import redis  # noqa: PLC0415 - only when a shared server was used

    client = redis.Redis.from_url(url)
    try:
        pattern = f"{{{redis_session_prefix()}*"
        batch = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(batch), 500):
            client.delete(*batch[i : i + 500])
    finally:
        client.close()


def redis_cluster_nodes() -> list[tuple[str, int]]:
    """The (host, port) of each primary of a three-node Redis Cluster started for this session."""
    spec = _get("redis-cluster", _start_redis_cluster)
    return [(host, int(port)) for host, port in (node.rsplit(":", 1) for node in spec.split(","))]


def _cluster_ports(count: int) -> list[int]:
    """Free ports whose cluster bus ports (port + 10000) are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = 20000 + secrets.randbelow(20000)
        if port in ports:
            continue
        try:
            for candidate in (port, port + 10000):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        ports.append(port)
    return ports


def _cluster_ok(cli: str, port: int) -> bool:
    info = subprocess.run(
        [cli, "-h", "127.0.0.1", "-p", str(port), "cluster", "info"], capture_output=True, check=False, timeout=5
    )
    return b"cluster_state:ok" in info.stdout


def _create_cluster(cli: str, ports: list[int]) -> None:
    nodes = [f"127.0.0.1:{port}" for port in ports]
    create = subprocess.run(
        [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
        capture_output=True,
        check=False,
        timeout=60,
    )
    if create.returncode != 0:
        raise _UnavailableError(
            f"redis-cli --cluster create failed:\n{create.stdout.decode(errors='replace')}"
            f"{create.stderr.decode(errors='replace')}",
            missing_binary=False,
        )


def _start_redis_cluster() -> _Server:
    binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if binary is None or cli is None:
        raise _UnavailableError(
            "redis-server and redis-cli are needed for the Redis Cluster test: install them (Debian/Ubuntu: "
            "`apt-get install redis-server`, macOS: `brew install redis`)",
            missing_binary=True,
        )
    workdir = Path(tempfile.mkdtemp(prefix="recoverable-redis-cluster-"))
    log = workdir / "cluster.log"
    ports = _cluster_ports(3)
    server = _Server(
        name="redis-cluster",
        processes=[],
        workdir=workdir,
        url=",".join(f"127.0.0.1:{port}" for port in ports),
        log=log,
    )
    try:
        for port in ports:
            server.processes.append(
                _popen(
                    [
                        binary,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--dir",
                        str(workdir),
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        f"nodes-{port}.conf",
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--daemonize",
                        "no",
                    ],
                    log=log,
                )
            )
        for port, process in zip(ports, server.processes, strict=True):
            node_up = functools.partial(_redis_ping, "127.0.0.1", port)
            _wait_until(node_up, process, "redis-server (cluster node)", server.log_tail)
        _create_cluster(cli, ports)
        for port, process in zip(ports, server.processes, strict=True):
            _wait_until(functools.partial(_cluster_ok, cli, port), process, "the Redis Cluster", server.log_tail)
    except BaseException:
        server.stop()
        raise
    return server


# --- PostgreSQL -------------------------------------------------------------------------------------------


def postgres_url() -> str:
    """The URL (`postgresql+asyncpg://...`) of a database created for this session on a PostgreSQL server."""
    return _get("postgres", _start_postgres)


def _pg_bindir() -> Path | None:
    on_path = shutil.which("initdb")
    if on_path is not None:
        # Debian links a few of them into /usr/local/bin; the folder that holds them all is the link's target.
        bindir = Path(on_path).resolve().parent
        if (bindir / "postgres").exists() and (bindir / "pg_isready").exists():
            return bindir
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb") + glob.glob("/usr/local/pgsql/bin/initdb"),
        key=lambda p: [int(part) if part.isdigit() else 0 for part in Path(p).parts],
    )
    return Path(candidates[-1]).parent if candidates else None


def _asyncpg_dsn(url: str) -> str:
    """The URL as asyncpg takes it: scheme `postgresql`, without SQLAlchemy's `+asyncpg`."""
    parts = urlsplit(url)
    return urlunsplit(("postgresql", *parts[1:]))


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("postgresql+asyncpg", parts.netloc, "/" + database, parts.query, parts.fragment))


def _create_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    import asyncpg  # noqa: PLC0415 - no types are published

    database = f"recoverable_test_{_SESSION}"

    async def create() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(admin_url))
        try:
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(_asyncpg_dsn(admin_url))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await conn.close()

    _run_in_thread(create)
    return _with_database(admin_url, database), lambda: _run_in_thread(drop)


def _start_postgres() -> _Server:
    if _ENV_POSTGRES_URL is not None:
        url, drop = _create_database(_ENV_POSTGRES_URL)
        server = _Server(name="postgres", processes=[], workdir=None, url=url)
        server.cleanups.append(drop)
        return server
    bindir = _pg_bindir()
    if bindir is None:
        raise _UnavailableError(
            "PostgreSQL server binaries (initdb, postgres) are not installed: install them (Debian/Ubuntu: "
            "`apt-get install postgresql`, macOS: `brew install postgresql`) or set "
            "RECOVERABLE_TEST_POSTGRES_URL=postgresql://user@host:port/db to test the SQL storage client on PostgreSQL",
            missing_binary=True,
        )
    user: str | None = None
    workdir = Path(tempfile.mkdtemp(prefix="recoverable-pg-"))
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root.
        user = "postgres"
        try:
            shutil.chown(workdir, user=user)
        except LookupError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise _UnavailableError(
                "running as root, the tests start PostgreSQL as the user 'postgres', which does not exist: "
                "create it (`useradd --system postgres`) or run the tests as another user",
                missing_binary=False,
            ) from exc
        workdir.chmod(0o755)
    data = workdir / "data"
    log = workdir / "postgres.log"
    init = subprocess.run(
        [str(bindir / "initdb"), "--pgdata", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
        capture_output=True,
        user=user,
        check=False,
    )
    if init.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise _UnavailableError(
            f"initdb failed with code {init.returncode}:\n{init.stdout.decode(errors='replace')}"
            f"{init.stderr.decode(errors='replace')}",
            missing_binary=False,
        )
    last: _UnavailableError | None = None
    for _ in range(5):
        port = _free_port()
        process = _popen(
            [
                str(bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(workdir),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
            ],
            log=log,
            user=user,
        )
        admin = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        server = _Server(
            name="postgres", processes=[process], workdir=workdir, url="", log=log, stop_signal=signal.SIGINT
        )

        def ready(pg_isready: Path = bindir / "pg_isready", p: int = port) -> bool:
            check = subprocess.run(
                [str(pg_isready), "-q", "-h", "127.0.0.1", "-p", str(p), "-U", "postgres"], check=False
            )
            return check.returncode == 0

        try:
            _wait_until(ready, process, "postgres", server.log_tail)
            server.url, _ = _create_database(admin)
        except _UnavailableError as error:
            last = error
            server.workdir = None
            server.stop()
            continue
        except BaseException:
            server.stop()
            raise
        return server
    shutil.rmtree(workdir, ignore_errors=True)
    assert last is not None
    raise last


if __name__ == "__main__":  # pragma: no cover - a manual check: start both, print their URLs, stop on Enter
    print(redis_url(), postgres_url(), sep="\n")  # noqa: T201
    sys.stdin.readline()
