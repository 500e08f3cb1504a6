"""Exception types with a defined CLI meaning.

Every error a user can cause (unknown names, bad values, missing or malformed
data, corrupt artifacts) is raised as a :class:`SuiteError` subclass.  The CLI
prints ``error: <message>`` on one line and exits with ``exit_code``.
"""

from __future__ import annotations


class SuiteError(Exception):
    """Base class for user-facing errors; ``str(err)`` is a one-line message."""

    exit_code: int = 2


class UnknownNameError(SuiteError, KeyError):
    """A name that is not in a registry (the message lists the choices)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ConfigError(SuiteError, ValueError):
    """An impossible or malformed setting (sparsity 1.2, negative epochs...)."""


class DataError(SuiteError):
    """Missing or malformed dataset files; the message names what was expected."""


class ArtifactError(SuiteError):
    """A corrupt or mismatched cached model, checkpoint or compiled artifact."""
