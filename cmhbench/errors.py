"""Errors that the command line reports as one line and a non-zero exit code.

Everything a user can cause (a bad option, a missing or corrupt file, an unknown plugin, a plugin
that raises) is raised as a :class:`CmhbenchError`; anything else is a bug in cmhbench itself.
"""

from __future__ import annotations


class CmhbenchError(Exception):
    """A problem with the user's input or environment; its message is shown as one line."""

    exit_code = 2


class UnknownNameError(CmhbenchError):
    """A method, dataset or hyperparameter name that is not registered."""


class DataError(CmhbenchError):
    """A missing, unreadable or malformed data or codes file."""


class FilesNotFoundError(DataError):
    """None of a dataset's file layouts is complete in the folders looked in."""


class ConfigError(CmhbenchError):
    """A hyperparameter override or option that does not validate."""


class DownloadError(CmhbenchError):
    """A download failed: no network, an unreachable address, or a checksum that does not match."""


class PluginError(CmhbenchError):
    """A plugin failed to load, to register, or raised while it ran."""

    exit_code = 3
