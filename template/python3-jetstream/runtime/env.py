"""Typed reads of environment variables that fail loudly.

Both the runtime and handlers read their settings through :class:`Env`, so every bad value
stops start-up with the same kind of one-line :class:`~runtime.errors.ConfigError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from .durations import parse_duration
from .errors import ConfigError
from .numbers import ascii_int

T = TypeVar("T")

#: The spellings Go's ``strconv.ParseBool`` accepts, so chart values carry over.
TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


@dataclass(frozen=True, slots=True)
class Env:
    """Read settings from a mapping of environment variables.

    An unset or empty variable takes the default; any other value must parse, or
    :class:`ConfigError` is raised naming the variable and what it accepts.
    """

    values: Mapping[str, str]

    def raw(self, name: str) -> str | None:
        """Return the stripped value, or ``None`` when the variable is unset or blank."""
        value = self.values.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def string(self, name: str, default: str) -> str:
        """Return the value as text."""
        value = self.raw(name)
        return default if value is None else value

    def _parse(self, name: str, default: T, parse: Callable[[str], T], accepted: str) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return parse(value)
        except ValueError:
            raise ConfigError(name, value, f"expected {accepted}") from None

    def integer(self, name: str, default: int, *, minimum: int, maximum: int) -> int:
        """Return a whole number within ``[minimum, maximum]``."""

        def parse(value: str) -> int:
            number = -ascii_int(value[1:]) if value.startswith("-") else ascii_int(value)
            if not minimum <= number <= maximum:
                raise ValueError(value)
            return number

        return self._parse(name, default, parse, f"a whole number from {minimum} to {maximum}")

    def duration(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        """Return seconds from a Go duration (``500ms``, ``10s``, ``1m30s``), at least ``minimum``."""

        def parse(value: str) -> float:
            seconds = parse_duration(value)
            if seconds < minimum:
                raise ValueError(value)
            return seconds

        floor = "0s" if minimum == 0 else f"{minimum:g}s"
        return self._parse(name, default, parse, f"a Go duration such as 500ms, 10s or 1m30s, at least {floor}")

    def boolean(self, name: str, default: bool) -> bool:
        """Return a boolean spelled as Go's ``strconv.ParseBool`` accepts."""

        def parse(value: str) -> bool:
            if value in TRUE:
                return True
            if value in FALSE:
                return False
            raise ValueError(value)

        return self._parse(name, default, parse, "true or false")

    def choice(self, name: str, default: str, choices: Iterable[str]) -> str:
        """Return one of ``choices`` (compared case-insensitively, returned in lower case)."""
        options = tuple(choices)

        def parse(value: str) -> str:
            if value.lower() not in options:
                raise ValueError(value)
            return value.lower()

        return self._parse(name, default, parse, "one of " + ", ".join(options))
