"""Atomic file writes: a temporary file beside the target, renamed onto it only when writing succeeded.

Every file a user keeps (datasets, checkpoints, audio, images, logs) is written through :class:`atomic_path`, so an
interrupted write never leaves a half-written file under the real name. The temporary file is named
``.<name>.<random>.tmp``; a process killed mid-write (``kill -9``, power loss) can leave one behind, never a
partial ``<name>``. A full disk is a one-line :class:`~specgan.errors.WriteError` naming the file.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from specgan.errors import WriteError

#: OSError numbers that can only mean the write itself failed (not, say, an unreadable source being copied).
WRITE_FAILURES = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
#: Bytes of the target's name that its temporary file's name keeps when the whole name makes it too long.
SHORT_PREFIX_BYTES = 64


class atomic_path:
    """Context manager yielding a temporary path beside ``path``; renamed onto ``path`` only on success.

    With ``durable``, the data is flushed to the disk (``fsync``) before the rename and the rename itself after
    it, so that after a power loss ``path`` is either the old file or the whole new one: for files that, once
    written, allow older ones to be deleted (checkpoints). On any error the temporary file is removed; an OSError
    that means the disk is full, over quota or read-only becomes a one-line WriteError naming ``path``.
    """

    def __init__(self, path: str | os.PathLike, *, durable: bool = False):
        self.path = Path(path)
        self.durable = durable

    def __enter__(self) -> Path:
        try:
            try:
                fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            except OSError as e:
                if e.errno != errno.ENAMETOOLONG:
                    raise
                # A name within the system's limit (255 bytes) but for the 14 that the temporary name adds had not
                # been writable at all: the temporary file takes a part of it (the rename then decides).
                prefix = os.fsdecode(os.fsencode(self.path.name)[:SHORT_PREFIX_BYTES])
                fd, name = tempfile.mkstemp(prefix=f".{prefix}.", suffix=".tmp", dir=self.path.parent)
        except OSError as e:
            raise WriteError(self.path, e.strerror or str(e)) from None
        os.close(fd)
        self.tmp = Path(name)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                if self.durable:
                    _fsync(self.tmp)
                os.replace(self.tmp, self.path)
            except OSError as e:
                self.tmp.unlink(missing_ok=True)
                raise WriteError(self.path, e.strerror or str(e)) from None
            if self.durable:
                try:
                    _fsync(self.path.parent)
                except OSError:  # some file systems cannot sync a folder; the file itself is complete
                    pass
            return
        self.tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in WRITE_FAILURES:
            raise WriteError(self.path, exc.strerror or os.strerror(exc.errno)) from None


def temp_files(folder: Path, target: str) -> list[Path]:
    """The temporary files that :class:`atomic_path` made in ``folder`` for targets whose names match the glob
    pattern ``target`` (``.<name>.<random>.tmp``): what a killed process left."""
    return sorted(Path(folder).glob(f".{target}.*.tmp"))


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

