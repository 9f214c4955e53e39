"""An exclusive lock on one rank's shard of an output directory, so that two runs never write the same shard.

Two ``heat predict`` runs pointed at one output directory would each read the ids already written, attribute the
rest and append them to the same shard: every line twice. :class:`OutputLock` takes an advisory ``flock`` on
``.lock-rank{r}`` in the directory for as long as the writer has the shard open; the file holds who took it (pid,
host, start time, command line), so the run that is refused can name the run that holds it. The operating system
drops the lock when its process ends, however it ends, so a crashed run never leaves a stale lock behind.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock-rank{rank}"


class OutputDirBusyError(RuntimeError):
    """Another live run holds the shard of this rank in this output directory."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return "a run whose details could not be read"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
    return (f"pid {info.get('pid')} on host {info.get('host')!r}, started {started}, command "
            f"{info.get('command')!r}")


class OutputLock:
    """Hold the lock of ``output_dir``'s shard of ``rank`` between :meth:`acquire` and :meth:`release`.

    Args:
        output_dir: the writer's output directory (must exist).
        rank: the process's global rank (each rank has its own shard and lock).
    """

    def __init__(self, output_dir: str | os.PathLike, rank: int) -> None:
        self.path = Path(output_dir) / LOCK_NAME.format(rank=rank)
        self.rank = rank
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`OutputDirBusyError` naming the directory and the run that holds it."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputDirBusyError(
                f"Expected no other run writing rank {self.rank}'s shard of {str(self.path.parent)!r}, got one: "
                f"{_holder(self.path)}. Wait for it to finish (a later run resumes where it stopped), or give this "
                "run another output directory."
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (idempotent). The lock file stays: removing it could race with a run taking it."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
