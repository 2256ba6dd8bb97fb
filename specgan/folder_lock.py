"""One writer per folder: an exclusive ``flock`` on ``FOLDER/.lock``, held while a command writes there.

``specgan prep`` holds its dataset folder and ``specgan train`` its run folder, so that two of them never
interleave their writes: the second is refused at once with a one-line error. The kernel drops the lock when its
holder exits, however it exits, so a killed command never leaves a folder locked.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from specgan.errors import SpecganError
from specgan.folders import remove_made


class FolderLock:
    """Context manager: the lock on ``folder`` (which must exist), or ``error`` raised with ``busy`` (the rest of
    the message after the folder's name) when another process holds it, and with ``elsewhere`` (what to do) when
    the folder cannot be written.

    A command that fails leaves no lock file it made alone in a folder, and ``made``, the outermost folder made for
    this command (``folder`` or a parent of it; see :func:`~specgan.folders.outermost_missing`), tells which empty
    folders to remove again: up to ``made``.
    """

    def __init__(self, folder: str | os.PathLike, *, error: type[SpecganError], busy: str, made: Path | None = None,
                 elsewhere: str = "choose another folder"):
        self.file = Path(folder) / ".lock"
        self.error, self.busy, self.made, self.elsewhere = error, busy, made, elsewhere

    def __enter__(self) -> "FolderLock":
        self.created = not self.file.exists()
        try:
            self.handle = open(self.file, "a+")
        except OSError as e:
            raise self.error(f"{self.file.parent}: cannot write here ({e.strerror or e}); {self.elsewhere}") from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise self.error(f"{self.file.parent}: {self.busy}") from None
        return self

    def __exit__(self, exc_type, *exc) -> None:
        folder = self.file.parent.absolute()
        if exc_type is not None and folder.is_dir():
            self._tidy(folder)
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()

    def _tidy(self, folder: Path) -> None:
        """After a failure: remove the lock file if this command made it and nothing else is there, and the
        folders made for this command that are empty (a folder deleted meanwhile is left alone)."""
        if self.created and os.listdir(folder) == [self.file.name]:
            self.file.unlink()  # still locked: no other command can be writing here
        remove_made(folder, made=self.made)
