"""The running robot's pid file, so that ``robot reload`` can find it and send it SIGHUP.

``robot run`` writes its pid to ``robot.pid`` beside the key file (a directory the robot
writes anyway: the audit checkpoints live there) and holds an exclusive ``flock`` on it
while it runs. The lock, not the file's existence, says a robot runs: a robot killed with
SIGKILL leaves the file behind but not the lock, so a stale file (or a pid since reused by
another program) is never signalled. A second robot on the same host and key file finds
the lock taken and goes on without a pid file (``robot reload`` then reaches the first one;
systemd's ``ExecReload`` reaches each by its own ``$MAINPID``).

This module must never signal a process that does not hold the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import time
from pathlib import Path

from robot.errors import UserError

PID_FILE = "robot.pid"


def pid_path(key_file: Path) -> Path:
    """Where the robot using ``key_file`` records its pid."""
    return key_file.parent / PID_FILE


class PidFile:
    """The pid file of this process, held (locked) from :meth:`acquire` to :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Lock the file and write our pid; False when another live robot holds it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        # `robot reload` holds a shared lock for a moment while it looks: try a little while.
        deadline = time.monotonic() + 0.5
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.02)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def release(self) -> None:
        """Remove the file (while still holding it) and let it go."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def running_pid(path: Path) -> int:
    """The pid of the robot holding ``path``; :class:`UserError` when no robot holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise UserError(f"no robot is running here: no pid file {path} (is `robot run` "
                        "started with this configuration?)") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode("ascii", "replace").strip()
        else:
            raise UserError(f"no robot is running here: {path} is left over from a robot "
                            "that stopped")
    finally:
        os.close(fd)
    if not text.isdigit():
        raise UserError(f"the robot is still starting ({path} has no pid yet); try again")
    return int(text)


def send_reload(path: Path) -> int:
    """Send SIGHUP to the robot holding ``path``; returns its pid."""
    pid = running_pid(path)
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise UserError(f"no robot is running here: process {pid} is gone") from None
    except PermissionError:
        raise UserError(f"not allowed to signal the robot (pid {pid}): run this as the "
                        "robot's user, or use: systemctl reload robot") from None
    return pid
