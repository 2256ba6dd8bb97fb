"""User-facing errors.

Every error a user can cause is a :class:`SpecganError` whose message is one line naming the offending file,
key or value. The CLI prints it and exits with code 2; anything else is an internal error (exit code 1).
"""

from __future__ import annotations


class SpecganError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""

    exit_code = 2


class AudioError(SpecganError):
    """An audio file or signal that cannot be used (unreadable, empty, silent, too short, non-finite)."""


class ConfigError(SpecganError):
    """A bad recipe or parameter: unknown key, wrong type, out-of-range value."""


class DatasetError(SpecganError):
    """A dataset folder that is missing, incomplete or incompatible with the requested parameters."""


class CheckpointError(SpecganError):
    """A checkpoint or run folder that is missing, damaged, or does not fit the request."""


class DamagedCheckpointError(CheckpointError):
    """A checkpoint file that cannot be used at all: truncated, corrupted (a failed CRC), not a specgan checkpoint,
    or lacking fields every checkpoint has. Continuing a run falls back to an older checkpoint past such a file;
    a checkpoint that is merely newer than this specgan understands is a plain :class:`CheckpointError`."""


class TrainingError(SpecganError):
    """Training cannot go on (e.g. a loss became NaN); the last good checkpoint is kept. Exit code 3."""

    exit_code = 3


class WriteError(SpecganError):
    """A file could not be written (:class:`~specgan.atomic.atomic_path`: no permission, a full disk, a read-only
    file system); the message names the file, ``reason`` is the system's word for why."""

    def __init__(self, path: object, reason: str):
        super().__init__(f"{path}: cannot write ({reason})")
        self.reason = reason


class RankFailed(SpecganError):
    """Under ``torchrun``: another rank met an error at a point where the ranks compare notes (see
    :meth:`specgan.train.distributed.Distributed.together`). The message is that rank's, prefixed with its rank, so
    that rank 0 can report it; ``exit_code`` is that error's."""

    def __init__(self, message: str, *, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


class LostRankError(TrainingError):
    """Under ``torchrun``: a collective failed because another rank is gone (killed, or its machine lost). Every
    rank that meets it reports it, since the rank that would normally report (rank 0) may be the one gone."""

    every_rank = True


class SpecganWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. audio parameters that leave mel bands
    empty); the command line prints each one once, as one ``warning:`` line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, ``docker stop``) reached a command: it stops as after Ctrl-C, keeping what it
    had written, and exits with 143 (128 + 15) as shells report a process SIGTERM ended."""

    exit_code = 143


class InterruptedWithWorkKept(KeyboardInterrupt):
    """A command was stopped by Ctrl-C or SIGTERM after some of its work was done and kept: prep's files so far,
    committed as a dataset whose manifest counts the files not yet reached (``unfinished``), or a folder's
    conversions written so far. The message says what was kept and how to go on; ``report`` is the command's
    report of it, where there is one, and the command line exits with ``exit_code`` (130, or 143 after SIGTERM)."""

    def __init__(self, message: str, *, exit_code: int = 130, report: object | None = None):
        super().__init__(message)
        self.exit_code = exit_code
        self.report = report


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by Ctrl-C (SIGINT) or SIGTERM (``kill``, ``timeout``, ``docker stop``, a batch
    scheduler). ``checkpoint`` is the newest checkpoint on disk (None if there is none) and ``step`` its step (0 if
    none); the message says where it is and how to continue. A KeyboardInterrupt, so anything that handles Ctrl-C
    handles this too; the command line exits with ``exit_code``, 128 + the signal's number (130, 143) as shells
    report a process the signal ended."""

    def __init__(self, message: str, *, step: int, checkpoint: object | None, signal_number: int = 2):
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint
        self.exit_code = 128 + signal_number


def check_format(document: object, *, path: object, expected: str, version: int, what: str,
                 error: type[SpecganError]) -> None:
    """Check the ``format``/``version`` header of a file specgan wrote (a dataset manifest, a checkpoint).

    Raises ``error`` naming ``path`` when the document is not of format ``expected`` or is newer than ``version``.
    """
    if not isinstance(document, dict) or document.get("format") != expected:
        raise error(f"{path}: not a specgan {what}")
    found = document.get("version", 0)
    if not isinstance(found, int) or isinstance(found, bool):
        raise error(f"{path}: {what} format version {found!r} is not a number")
    if found > version:
        raise error(f"{path}: {what} format version {document['version']} is newer than this specgan "
                    f"understands ({version}); upgrade specgan")
