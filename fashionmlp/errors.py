"""Errors that are the user's to fix (exit code 2) and the outcomes that end a run early."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in a config, path, option or data file: shown as one line, exit code 2."""

    exit_code = 2


class StoppedBeforeStart(Exception):
    """Ctrl-C or SIGTERM before anything was written (while the data loaded): not a mistake, nor a bug; one line,
    exit code 130."""

    exit_code = 130

    def __init__(self, what: str = "the run", left: str = "nothing was written") -> None:
        super().__init__(f"interrupted before {what} started: {left}")


class StoppedWaiting(UserError):
    """Ctrl-C or SIGTERM ended a wait for something outside the tool (a database that went away): one line, exit
    code 130, as for any other stop."""

    exit_code = 130


class ConfigError(UserError):
    """A config key, value or override that does not validate."""


class DataError(UserError):
    """Data files that are missing, damaged or inconsistent."""


class DataMissing(DataError):
    """The data files are not in the folder the command looked in."""
