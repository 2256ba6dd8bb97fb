"""Atomic file writes: a temporary file beside the target, renamed onto it only when writing succeeded.

Every file a user keeps (datasets, checkpoints, audio, images, logs) is written through :class:`atomic_path`, so an
interrupted write never leaves a half-written file under the real name.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from specgan.errors import SpecganError


class atomic_path:
    """Context manager yielding a temporary path beside ``path``; renamed onto ``path`` only on success."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self) -> Path:
        try:
            fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as e:
            raise SpecganError(f"{self.path}: cannot write ({e.strerror or e})") from None
        os.close(fd)
        self.tmp = Path(name)
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)
