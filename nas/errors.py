"""The errors the CLI reports as one line: bad input (exit 2) and a failure during work (exit 1).

`nas.cli` catches both at its one boundary; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


def shown_path(path: str | Path) -> str:
    """`path` as it can be printed: the bytes of a name that is not UTF-8 (kept by Python as surrogates, which
    no terminal can write) shown as `\\xff` escapes."""
    text = str(path)
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that stands for no byte: escape it as it is
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


class NasError(Exception):
    """An error whose `str()` names the file concerned (if any) and what is wrong."""

    def __init__(self, path: str | Path | None, message: str):
        self.path = None if path is None else Path(path)
        self.message = message
        super().__init__(f"{shown_path(self.path)}: {message}" if self.path else message)


class ConfigError(NasError):
    """Bad user input, found before any work starts: a config, space, hardware, data or model file.

    `str()` names the file and what is wrong with it, which is all the user needs to fix it.
    """


class NasRuntimeError(NasError):
    """A failure during work (training, caching, exporting) on inputs that passed their checks.

    A trial that raises one fails with `str()` as its reason and the study goes on; a command that
    raises one (`nas finalize`, `nas arch export`) exits 1 with that line.
    """


class StageError(NasRuntimeError):
    """A failure of one stage of work that concerns no single user file: the message says it all."""

    def __init__(self, message: str):
        super().__init__(None, message)


class TeacherError(NasRuntimeError):
    """The teacher failed while it ran: an output of the wrong shape, a cache that misses images."""


def not_utf8(path: str | Path, exc: UnicodeDecodeError) -> ConfigError:
    """The one line for a text file (config, space, profile, arch JSON) that is not UTF-8."""
    return ConfigError(path, f"not UTF-8 text (byte {exc.start}: {exc.reason}); save the file as UTF-8")
