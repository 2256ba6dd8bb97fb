"""Finding the files of one kind under a folder, by suffix: prep's recordings and an image folder's pictures.

Hidden files and folders are skipped (a hidden folder that holds files of the kind sought is named, see
:attr:`FileScan.hidden`). Symbolic links to folders are followed (a domain or class folder may be a
link to where the files live), each folder once: a folder reached both as itself and through a link is searched as
itself, wherever the link sorts (a link named ``A_alias`` to ``B`` must not take B's files for another domain or
class), and a link back to a folder already searched, as in a link loop, is passed over.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class FileScan:
    """What :func:`scan_files` found under a folder, as paths relative to it (``os.sep`` between parts).

    Attributes:
        files: the files of the kind sought, sorted part by part, as :class:`~pathlib.Path` objects sort.
        ignored: the other files, passed over by their names, in the order found.
        repeated: ``(folder, the folder it is)`` for each folder reached again through a link, passed over.
        skipped: where the folder ``skip`` was met and left out (through a link, it can lie elsewhere), or None.
        hidden: the hidden folders passed over that hold files of the kind sought themselves (not searched further
            down: a ``.git`` is not walked), other than links to folders searched anyway.
    """

    files: list[str]
    ignored: list[str]
    repeated: list[tuple[str, str]]
    skipped: str | None = None
    hidden: list[str] = field(default_factory=list)

    def top_folders(self, keep: Callable[[str | None], bool]) -> "FileScan":
        """The scan with only the files and passed-over files under the top-level folders ``keep`` accepts (its
        argument: the folder's name, None for the files lying directly in the folder)."""
        def kept(relative: str) -> bool:
            return keep(relative.split(os.sep, 1)[0] if os.sep in relative else None)
        return FileScan([r for r in self.files if kept(r)], [r for r in self.ignored if kept(r)], self.repeated,
                        self.skipped, [r for r in self.hidden if kept(r)])

    def ignored_suffixes(self) -> dict[str, int]:
        """Suffix (lower case; ``""`` for none) → how many files were passed over with it."""
        counts: dict[str, int] = {}
        for relative in self.ignored:
            suffix = os.path.splitext(relative)[1].lower()
            counts[suffix] = counts.get(suffix, 0) + 1
        return counts

    def loose_beside(self, name: str) -> int:
        """How many files lie directly in the folder when its sub-folder ``name`` holds some too (0 otherwise): named
        after the folder, the loose ones share that sub-folder's label (domain, class)."""
        loose = sum(os.sep not in relative for relative in self.files)
        return loose if loose and any(relative.startswith(name + os.sep) for relative in self.files) else 0

    def ignored_counts(self, most: int = 6) -> str:
        """The commonest suffixes passed over, for a message: ``"3 .txt, 1 .bmp, 1 without a suffix"``."""
        return ", ".join(f"{n} {suffix or 'without a suffix'}" for suffix, n in
                         sorted(self.ignored_suffixes().items(), key=lambda item: (-item[1], item[0]))[:most])


def _identity(path: str) -> tuple[int, int] | str:
    try:
        info = os.stat(path)
    except OSError:
        return path
    return info.st_dev, info.st_ino


def scan_files(folder: str | os.PathLike, *, suffixes: frozenset[str],
               skip: str | os.PathLike | None = None) -> FileScan:
    """The files under ``folder`` whose lower-case suffix is in ``suffixes``, and what was passed over, leaving out
    the folder ``skip`` (e.g. prep's output, when it lies inside). Strings, because pathlib's parsing took most of
    a prep's discovery (10 ms for 648 files)."""
    # Every real folder, reached without following links, by identity.
    real = {}
    for root, dirs, _ in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        real.setdefault(_identity(root), os.path.relpath(root, folder))
    skipped = _identity(os.fspath(skip)) if skip is not None else None
    found, ignored, repeated, searched, skipped_at, hidden = [], [], [], {}, None, []
    for root, dirs, names in os.walk(folder, followlinks=True):
        relative_root = os.path.relpath(root, folder)
        identity = _identity(root)
        first = searched.get(identity, real.get(identity, relative_root))
        if identity in searched or first != relative_root:
            # reached again (or, through a link, before the folder itself): listed once, and loops end here
            repeated.append((relative_root, first))
            dirs[:] = []
            continue
        if identity == skipped:
            skipped_at = skipped_at or relative_root
            dirs[:] = []
            continue
        searched[identity] = relative_root
        prefix = "" if relative_root == os.curdir else relative_root + os.sep
        hidden += [prefix + d for d in sorted(dirs) if d.startswith(".")]
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in names:
            if name.startswith("."):
                continue
            (found if os.path.splitext(name)[1].lower() in suffixes else ignored).append(prefix + name)
    # Hidden folders worth a word: those that hold such files themselves, each once (one may be linked to from
    # elsewhere: the folder itself is named rather than a link to it), and not a link to a folder searched anyway.
    named: dict = {}
    for relative in hidden:
        path = os.path.join(folder, relative)
        identity = _identity(path)
        if identity in searched:
            continue
        if identity in named:
            if os.path.islink(os.path.join(folder, named[identity])) and not os.path.islink(path):
                named[identity] = relative
        elif _holds_files(path, suffixes):
            named[identity] = relative
    hidden = sorted(named.values(), key=lambda relative: relative.split(os.sep))
    return FileScan(sorted(found, key=lambda relative: relative.split(os.sep)), ignored, repeated, skipped_at, hidden)


def _holds_files(folder: str, suffixes: frozenset[str]) -> bool:
    """Whether ``folder`` itself (not its sub-folders) holds files, not hidden, named with one of ``suffixes``
    (False for one that cannot be read)."""
    try:
        return any(not name.startswith(".") and os.path.splitext(name)[1].lower() in suffixes
                   for name in os.listdir(folder))
    except OSError:
        return False
