"""The processes of this host as leases judge them: alive (not a zombie), the very one (its start time), whose."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import psutil

if TYPE_CHECKING:
    from recoverable._lease_record import LeaseRecord

__all__ = [
    "SAME_START_SECS",
    "LeaseStatus",
    "lease_status",
    "owner_died",
    "pid_alive",
    "pid_namespace",
    "same_pids",
    "same_user",
    "started_at",
]

LeaseStatus = Literal["live", "expired", "owner gone"]
"""What a lease record says to whoever reads it: its owner holds it ("live"), it expired, or it has not expired
but its owner was a process of this host that is gone ("owner gone"). Only a live lease keeps others out."""

SAME_START_SECS = 1.0
"""How far apart two readings of one process's start time may be (psutil derives it from the boot time)."""


def pid_namespace() -> int | None:
    """The pid namespace of this process (the inode of /proc/self/ns/pid), or None where there is none."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def started_at(pid: int) -> datetime | None:
    """When process `pid` of this host started, or None when it does not exist (or cannot be read)."""
    try:
        return datetime.fromtimestamp(psutil.Process(pid).create_time(), UTC)
    except psutil.Error:
        return None


def same_user(pid: int) -> bool:
    """Whether process `pid` runs as the real user of this process."""
    try:
        return psutil.Process(pid).uids().real == os.getuid()
    except psutil.Error:
        return False


def pid_alive(pid: int, started_at: datetime | None = None) -> bool:
    """Whether process `pid` of this host still runs, and is the one that started at `started_at` (if given).

    A zombie (dead, not yet reaped by its parent) does not run; nor does the owner whose pid was given to
    a process started later.
    """
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started_at is None or abs(process.create_time() - started_at.timestamp()) < SAME_START_SECS
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # it exists, but belongs to someone we may not inspect


def same_pids(record: LeaseRecord, *, host: str, namespace: int | None) -> bool:
    """Whether the pid of the lease `record` means the same process on `host` in the pid namespace `namespace`."""
    if record.host != host:
        return False
    return None in (record.pid_namespace, namespace) or record.pid_namespace == namespace


def owner_died(record: LeaseRecord, *, host: str, namespace: int | None, started: datetime | None) -> bool:
    """Whether the owner of the lease `record` was a process of this host that is gone (or a zombie) by now.

    Args:
        record: The lease record.
        host: The name of this host.
        namespace: The pid namespace of this process (`pid_namespace()`).
        started: When this process started (`started_at(os.getpid())`).
    """
    if not same_pids(record, host=host, namespace=namespace):
        return False
    if record.pid == os.getpid():
        # This process has that pid now (a restart in a new container, say): the owner had it before.
        return (
            record.process_started_at is not None
            and started is not None
            and abs((record.process_started_at - started).total_seconds()) >= SAME_START_SECS
        )
    return not pid_alive(record.pid, record.process_started_at)


def lease_status(record: LeaseRecord) -> LeaseStatus:
    """Whether the lease `record` keeps other processes out of its state now, as a `StateLease` taking it judges.

    An expired lease does not, nor does one whose owner was a process of this host (in this pid namespace)
    that is gone. Any other lease is "live": its owner runs, or is a process of another host.
    """
    if record.expires_at <= datetime.now(UTC):
        return "expired"
    if owner_died(record, host=socket.gethostname(), namespace=pid_namespace(), started=started_at(os.getpid())):
        return "owner gone"
    return "live"
