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


class FolderLock:
    """Context manager: the lock on ``folder`` (which must exist), or ``error`` raised with ``busy`` (the rest of
    the message after the folder's name) when another process holds it.

    With ``new_folder`` (the folder was made for this command), a command that fails leaves no folder holding only
    the lock file behind: the folder is removed again.
    """

    def __init__(self, folder: str | os.PathLike, *, error: type[SpecganError], busy: str, new_folder: bool = False):
        self.file = Path(folder) / ".lock"
        self.error, self.busy, self.new_folder = error, busy, new_folder

    def __enter__(self) -> "FolderLock":
        try:
            self.handle = open(self.file, "a+")
        except OSError as e:
            raise self.error(f"{self.file.parent}: cannot write here ({e.strerror or e})") from None
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise self.error(f"{self.file.parent}: {self.busy}") from None
        return self

    def __exit__(self, exc_type, *exc) -> None:
        folder = self.file.parent
        if exc_type is not None and self.new_folder and os.listdir(folder) == [self.file.name]:
            self.file.unlink()  # still locked: no other command can be writing here
            folder.rmdir()
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
