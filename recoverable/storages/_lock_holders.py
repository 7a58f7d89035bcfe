"""Who holds a lock on a file of this host: for the messages of writers that waited too long for one.

The file system client's stores and SQLite databases are shared between the processes of one machine
through locks on files. A process frozen while holding one (SIGSTOP, a debugger, a paused container)
keeps it until it runs again or ends; the writers that gave up waiting name it, so that it can be found.
"""

from __future__ import annotations

import os
from typing import Literal

import psutil

__all__ = ["describe_holder", "lock_holders"]


def lock_holders(paths: list[str], *, kind: Literal["FLOCK", "POSIX"]) -> set[int] | None:
    """The processes holding an exclusive lock of `kind` on any of `paths`, from /proc/locks.

    Returns None where the system has no /proc/locks (not Linux). This process is left out, and so
    are files that do not exist.
    """
    wanted: set[str] = set()
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        wanted.add(f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}")
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    holders: set[int] = set()
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; a waiter has "->" after the number.
        fields = line.split()
        if (
            len(fields) >= 6  # noqa: PLR2004
            and fields[1] == kind
            and fields[3] == "WRITE"
            and fields[5] in wanted
            and fields[4].isdigit()
        ):
            holders.add(int(fields[4]))
    holders.discard(os.getpid())
    return holders


def describe_holder(pid: int | None) -> tuple[str, str]:
    """Who holds a lock, and what to do about it, for a message."""
    if pid is None:
        return "another process", "find the process that has the file open (`fuser`), then resume or end it"
    try:
        status = str(psutil.Process(pid).status())
    except psutil.NoSuchProcess:
        status = psutil.STATUS_DEAD
    except psutil.Error:
        status = "status unknown"
    if status in (psutil.STATUS_DEAD, psutil.STATUS_ZOMBIE):
        # The lock belongs to the open file: a process forked from the one that took it holds it still.
        return (
            f"a process that inherited it from process {pid}, which is gone (a worker that process forked, say)",
            "end the processes forked from it (`fuser` on the file lists those that have it open)",
        )
    return (
        f"process {pid} on this host ({status})",
        f"if it is frozen (SIGSTOP, a debugger, a paused container), resume it with `kill -CONT {pid}` or end it",
    )
