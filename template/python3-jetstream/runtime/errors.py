"""Errors raised by the runtime.

::

    ConnectorError
     ├── ConfigError       a setting is missing or invalid; the message names the variable
     ├── HandlerLoadError  the function package cannot be imported or has no ``handle``
     └── NotConnected      NATS is not reachable right now (before connecting, or reconnecting)
"""

from __future__ import annotations

#: Exit status for a bad setting or an unloadable function (sysexits' EX_CONFIG).
EXIT_CONFIG = 78


class ConnectorError(Exception):
    """Base class of every error the runtime raises on purpose."""


class ConfigError(ConnectorError):
    """A setting is invalid; ``str(error)`` is one line that names the variable."""

    def __init__(self, variable: str, value: str, problem: str) -> None:
        self.variable = variable
        self.value = value
        self.problem = problem
        super().__init__(f"invalid setting {variable}={value!r}: {problem}")


class HandlerLoadError(ConnectorError):
    """The function package cannot be loaded."""


class NotConnected(ConnectorError):
    """NATS cannot be used right now; try again later (an HTTP route answers 503)."""


def describe(error: BaseException) -> str:
    """An error as one line for a log or a dead letter: its type, and its message if it has one."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
