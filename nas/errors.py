"""Errors the CLI reports as one line and a non-zero exit, before any work starts."""

from __future__ import annotations

from pathlib import Path


class ConfigError(Exception):
    """Bad user input: a config, space, hardware or data file that cannot be used.

    `str()` names the file and what is wrong with it, which is all the user needs to fix it.
    """

    def __init__(self, path: str | Path | None, message: str):
        self.path = None if path is None else Path(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)
