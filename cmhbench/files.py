"""Atomic file writes with the modes a user expects.

Every file cmhbench writes (results, codes, leaderboards, plots, feature caches, downloads) is
written to a temporary file beside its destination and renamed into place, so a reader never sees
half a file. ``tempfile.mkstemp`` creates its files with mode 0600; :func:`temp_beside` gives
them the mode an ordinary ``open()`` would (0666 less the umask: 0644 under the usual 022), so a
lab's shared results folder stays readable to colleagues.
"""

from __future__ import annotations

import os
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read from /proc where it can be, else set and restored under a lock)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def temp_beside(path: Path, suffix: str = ".tmp") -> tuple[int, str]:
    """An open descriptor and the name of a new hidden temporary file in ``path``'s folder, with
    the usual file mode; the folder is created if needed. The caller renames or removes it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    try:
        os.fchmod(fd, file_mode())
    except (AttributeError, OSError):  # no fchmod (Windows): keep mkstemp's mode
        pass
    return fd, tmp


@contextmanager
def atomic_open(path: Path, binary: bool = False, fsync: bool = True) -> Iterator[IO]:
    """Open a temporary file for writing that replaces ``path`` when the block ends without error
    (and is removed otherwise)."""
    path = Path(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            yield fh
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
