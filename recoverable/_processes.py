"""The processes of this host as leases judge them: alive (not a zombie), the very one (its start time), whose."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import psutil

__all__ = ["SAME_START_SECS", "pid_alive", "pid_namespace", "same_user", "started_at"]

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
