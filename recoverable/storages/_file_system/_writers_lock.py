"""The writers' lock of one store folder: threads of this process take turns, then processes `flock` `.lock`.

Waiting for it is bounded and cancellable: a process frozen while holding the lock never blocks another one
for ever, nor keeps it from exiting. The file `.lock` also carries, in its first 8 bytes, a generation
counter that every writer of this library bumps (how readers of other processes learn the folder changed,
whatever the clock's granularity), and in the next 8 the process id of its holder (how a writer that waited
too long names it).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from recoverable.errors import StoreLockedError
from recoverable.storages._file_system._layout import LOCK_FILE
from recoverable.storages._file_system._no_follow import LINK, not_a_file, open_folder, refusal, what_is
from recoverable.storages._lock_holders import describe_holder, lock_holders

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

__all__ = ["LockWait", "LockWaitCancelledError", "WritersLock"]

_HOLDER_OFFSET = 8
"""Where in `.lock` its holder writes its process id (the first 8 bytes hold the generation)."""
_HEADER_SIZE = 16
"""The generation counter and the holder's process id."""
_LOCK_POLL_MIN_SECS = 0.0005
_LOCK_POLL_MAX_SECS = 0.02

# os.getpid() is a system call; the process id changes only in a forked child.
_pid = os.getpid()
_pid_bytes = _pid.to_bytes(8, "little")


def _after_fork_in_child() -> None:
    global _pid, _pid_bytes  # noqa: PLW0603 - a forked child is another process
    _pid = os.getpid()
    _pid_bytes = _pid.to_bytes(8, "little")


os.register_at_fork(after_in_child=_after_fork_in_child)


class LockWaitCancelledError(Exception):
    """The operation waiting for the writers' lock was cancelled; nothing was written."""


@dataclass(frozen=True, slots=True)
class LockWait:
    """How long an operation waits for the writers' lock, and the event that ends the wait early."""

    timeout: float
    cancel: threading.Event = field(default_factory=threading.Event)


class WritersLock:
    """The writers' lock of the store folder `path`, and the generation counter kept in its file.

    Args:
        path: The store's folder.
        label: The store's name or id, as messages say it.
    """

    def __init__(self, path: Path, *, label: str) -> None:
        self._path = path
        self._file_path = path / LOCK_FILE
        self._label = label
        self._writers = threading.Lock()
        self._fd: int | None = None
        self._identity = (-1, -1)
        """The device and inode of the open `.lock`."""
        self._held_generation: int | None = None
        """The generation counter while this process holds the lock (nobody else can change it meanwhile)."""
        self.replaced = 0
        """How many times `.lock` was found replaced (its folder dropped and made anew) and opened again."""

    @property
    def fd(self) -> int | None:
        """The descriptor of `.lock` while it is open."""
        return self._fd

    def _file(self) -> int:
        if self._fd is None:
            self._fd = self._open_file()
        return self._fd

    def _open_file(self) -> int:
        """Open `.lock`, creating it, without following a link; refuse anything but a regular file."""
        dir_fd = open_folder(self._path, store=self._label)
        try:
            fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        except OSError as exc:
            what = LINK if exc.errno == errno.ELOOP else what_is(LOCK_FILE, dir_fd)
            if what is None:
                raise
            raise refusal(self._file_path, what, store=self._label) from exc
        finally:
            os.close(dir_fd)
        st = os.fstat(fd)
        what = not_a_file(st.st_mode)
        if what is not None:
            os.close(fd)
            raise refusal(self._file_path, what, store=self._label)
        self._identity = (st.st_dev, st.st_ino)
        return fd

    def _is_file_of(self, folder: int) -> bool:
        """Whether the `.lock` of the open store folder is the very file this lock has open."""
        try:
            st = os.stat(LOCK_FILE, dir_fd=folder, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._identity

    @contextmanager
    def hold(self, wait: LockWait) -> Iterator[int]:
        """Hold the lock of writers: threads of this process, then processes (flock on `.lock`).

        Waiting for it is bounded by `wait.timeout` (then `StoreLockedError` names the holder) and ends
        early when `wait.cancel` is set (then `LockWaitCancelledError`).

        Yields the store's folder, opened without following a link once the lock is held, and whose `.lock` is
        the file locked: when the folder was dropped and made anew by another process since `.lock` was
        opened, the new `.lock` is opened and locked instead (locking the old, deleted file would not exclude
        the writers of the new one).
        """
        deadline = time.monotonic() + wait.timeout
        # The writers of this process take turns first (a flock is shared by all users of one descriptor).
        if not self._writers.acquire(blocking=False):
            self._wait_for(lambda: self._writers.acquire(timeout=_LOCK_POLL_MAX_SECS), deadline, wait, holder=_pid)
        try:
            fd, folder = self._lock_file_of_folder(deadline, wait)
            try:
                yield folder
            finally:
                self._held_generation = None
                try:
                    os.close(folder)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._writers.release()

    def _lock_file_of_folder(self, deadline: float, wait: LockWait) -> tuple[int, int]:
        """Flock `.lock`, open the store's folder and check that its `.lock` is the file locked; retry if not.

        Returns the descriptors of `.lock` (locked) and of the folder.
        """
        while True:
            fd = self._file()
            if not _try_flock(fd):
                self._wait_for(functools.partial(_try_flock, fd), deadline, wait, holder=None)
            try:
                folder = open_folder(self._path, store=self._label)
                try:
                    if self._is_file_of(folder):
                        self._note_holder(fd)
                        return fd, folder
                except BaseException:
                    os.close(folder)
                    raise
                os.close(folder)
            except BaseException:
                fcntl.flock(fd, fcntl.LOCK_UN)
                raise
            fcntl.flock(fd, fcntl.LOCK_UN)
            self.close()
            self.replaced += 1

    def _note_holder(self, fd: int) -> None:
        """Read the generation, and record this process as the holder unless it is recorded already."""
        header = os.pread(fd, _HEADER_SIZE, 0).ljust(_HEADER_SIZE, b"\0")
        if header[_HOLDER_OFFSET:] != _pid_bytes:
            # Read by whoever waits too long for the lock, to name the process holding it.
            os.pwrite(fd, _pid_bytes, _HOLDER_OFFSET)
        # Only a holder of the lock changes the counter: while this process holds it, it is known without a read.
        self._held_generation = int.from_bytes(header[:_HOLDER_OFFSET], "little")

    def _wait_for(self, attempt: Callable[[], bool], deadline: float, wait: LockWait, *, holder: int | None) -> None:
        """Call `attempt` until it returns True, backing off; raise at the deadline or on cancellation."""
        pause = _LOCK_POLL_MIN_SECS
        while not attempt():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._locked_error(wait, holder if holder is not None else self.holder())
            if wait.cancel.wait(min(pause, remaining)):
                raise LockWaitCancelledError
            pause = min(pause * 2, _LOCK_POLL_MAX_SECS)

    def holder(self) -> int | None:
        """The process holding the writers' lock of this folder, when it can be found out."""
        try:
            recorded = int.from_bytes(os.pread(self._file(), 8, _HOLDER_OFFSET).ljust(8, b"\0"), "little")
        except OSError:
            return None
        holders = lock_holders([str(self._file_path)], kind="FLOCK")
        if holders is None:  # no /proc/locks here: trust what the last holder wrote
            return recorded or None
        if not holders:
            return None
        return recorded if recorded in holders else min(holders)

    def _locked_error(self, wait: LockWait, holder: int | None) -> StoreLockedError:
        if holder == _pid:
            who, todo = "another thread of this process", "a write of this process takes that long"
        else:
            who, todo = describe_holder(holder)
        return StoreLockedError(
            f"the writers' lock {self._file_path} of key-value store {self._label!r} was held by {who} for "
            f"longer than {wait.timeout:g} s; nothing was written. {todo[0].upper()}{todo[1:]}; if its writes are "
            "just slow, raise lock_timeout= of FileSystemStorageClient",
            store=self._label,
            holder_pid=holder,
        )

    def generation(self) -> int:
        """The folder's generation counter: bumped by every writer of this library, in any process."""
        held = self._held_generation
        if held is not None:
            return held
        return int.from_bytes(os.pread(self._file(), 8, 0).ljust(8, b"\0"), "little")

    def set_generation(self, generation: int) -> None:
        """Set the generation counter; only a holder of the lock may."""
        os.pwrite(self._file(), generation.to_bytes(8, "little"), 0)
        self._held_generation = generation

    @contextmanager
    def threads_turn(self) -> Iterator[None]:
        """Hold the turn of this process's writers only, without a deadline (to close the file, say)."""
        with self._writers:
            yield

    def close(self) -> None:
        """Close `.lock` (when the folder is dropped); call it holding `threads_turn`."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def reset_after_fork(self) -> None:
        """Let go of the parent's lock in a forked child (a `multiprocessing` worker, say).

        A flock belongs to the open file, which the child shares: were it kept open, the lock would outlive
        the parent, and a parent that died (or was ended for freezing) holding it would block every writer
        for as long as the child lives. Closing the child's copy never unlocks the parent's.
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._held_generation = None
        self._writers = threading.Lock()  # a thread of the parent may have held it


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
