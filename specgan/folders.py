"""Folders a command makes for its outputs: made before any work is spent, and removed again when it fails.

A command that fails (bad input, a full disk, Ctrl-C) leaves no empty folder it made behind, nor the empty
parents it made for it: ``specgan sample -o new/dir/grid.png`` that fails leaves no ``new/``. Folders that existed
before, or that hold anything by then, are always kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from specgan.errors import SpecganError


def outermost_missing(folder: str | os.PathLike) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist yet (what ``mkdir -p`` would make first), or
    None when ``folder`` exists."""
    folder = Path(folder).absolute()
    if folder.exists():
        return None
    while not folder.parent.exists():
        folder = folder.parent
    return folder


def remove_made(folder: str | os.PathLike, *, made: Path | None) -> None:
    """Remove ``folder`` if empty, then its parents while they are empty, up to and including ``made`` (from
    :func:`outermost_missing` before they were made); nothing when ``made`` is None (all existed before). A folder
    that is gone already or holds anything stops the walk."""
    if made is None:
        return
    folder, made = Path(folder).absolute(), made.absolute()
    try:
        while folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            if folder == made or made not in folder.parents:
                break
            folder = folder.parent
    except OSError:  # filled or removed meanwhile (another command there), or unreadable: what is left stays
        pass  # (raising here would hide the error that is being reported)


@contextmanager
def made_parent(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager: the folder ``path`` will be written into, created with its parents (an OSError, such as a
    file in the way or no permission, is a one-line SpecganError naming ``path``), and removed again, with the
    parents made for it, when the block raises and they are still empty."""
    folder = Path(path).parent
    made = outermost_missing(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        reason = f"{existing} is a file" if existing is not None and not existing.is_dir() else e.strerror or e
        raise SpecganError(f"{path}: cannot create its folder ({reason})") from None
    try:
        yield folder
    except BaseException:
        remove_made(folder, made=made)
        raise
