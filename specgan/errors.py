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


class SpecganWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. audio parameters that leave mel bands
    empty); the command line prints each one once, as one ``warning:`` line."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training was stopped by Ctrl-C. ``checkpoint`` is the newest checkpoint on disk (None if there is none)
    and ``step`` its step (0 if none); the message says where it is and how to continue. A KeyboardInterrupt, so
    anything that handles Ctrl-C (exit code 130) handles this too."""

    def __init__(self, message: str, *, step: int, checkpoint: object | None):
        super().__init__(message)
        self.step, self.checkpoint = step, checkpoint


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
