"""Where the command-line tool finds the worker's settings: ``stack.yml`` (the file operators
deploy with), overridden by the environment, as faas-cli and the worker's pod see them.

Pure functions read the stack; :func:`load` puts it together with the environment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from runtime import ConfigError, Settings

from ..handler import ENV_DEFAULTS, NAME
from ..settings import WorkerSettings

#: ``${VAR}``, ``${VAR:-default}`` and ``${VAR-default}``, as faas-cli expands them (envsubst).
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


class StackError(ValueError):
    """A stack file that cannot be used; the message says which part."""


def expand(text: str, environ: Mapping[str, str]) -> str:
    """Substitute environment variables the way faas-cli does before it parses a stack file. Pure."""

    def value(match: re.Match[str]) -> str:
        name, operator, default = match.group(1), match.group(2), match.group(3) or ""
        found = environ.get(name)
        if found is None or (operator == ":-" and found == ""):
            return default if operator else ""
        return found

    return _VARIABLE.sub(value, text)


@dataclass(frozen=True, slots=True)
class StackFunction:
    """One function of a stack file: its name, its environment, and the gateway it deploys to."""

    name: str
    environment: dict[str, str]
    gateway: str


def stack_function(text: str, environ: Mapping[str, str], wanted: str | None, read: Any = None) -> StackFunction:
    """The function ``wanted`` (else the queue-worker, else the only one) of a stack file. Pure
    but for ``read``, which returns an ``environment_file``'s text by its name.

    Raises:
        StackError: the file is not a stack, names no such function, or is ambiguous.
    """
    try:
        stack = yaml.safe_load(expand(text, environ))
    except yaml.YAMLError as exc:
        raise StackError(f"not YAML: {exc}") from None
    functions = stack.get("functions") if isinstance(stack, dict) else None
    if not isinstance(functions, dict) or not functions:
        raise StackError("no functions: section")
    if wanted is None:
        candidates = [n for n in functions if n == NAME] or list(functions)
        if len(candidates) > 1:
            raise StackError(f"several functions ({', '.join(sorted(functions))}): pick one with --function")
        wanted = candidates[0]
    spec = functions.get(wanted)
    if not isinstance(spec, dict):
        raise StackError(f"no function {wanted!r}; it has {', '.join(sorted(functions))}")
    environment: dict[str, str] = {}
    for file in spec.get("environment_file") or ():
        if read is None:
            raise StackError(f"environment_file {file} cannot be read here")
        included = yaml.safe_load(expand(read(str(file)), environ)) or {}
        environment.update(_strings(included.get("environment") or {}, f"environment_file {file}"))
    environment.update(_strings(spec.get("environment") or {}, f"{wanted}.environment"))
    provider = stack.get("provider") or {}
    gateway = str(provider.get("gateway") or "http://127.0.0.1:8080").rstrip("/")
    return StackFunction(wanted, environment, gateway)


def _strings(values: object, where: str) -> dict[str, str]:
    if not isinstance(values, dict):
        raise StackError(f"{where}: expected a map of names to values")
    # YAML makes 50 an int and true a bool; the worker reads them as the text faas-cli sends.
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in values.items()}


@dataclass(frozen=True, slots=True)
class Config:
    """What the commands need: the runtime's settings (NATS, stream, dead letters), the
    worker's (call status), and where its front door answers."""

    settings: Settings
    worker: WorkerSettings
    front_door: str
    #: Where the settings came from, for error messages: ``stack.yml (queue-worker)`` or ``environment``.
    source: str


def load(stack: Path | None, function: str | None, url: str | None, environ: Mapping[str, str]) -> Config:
    """Read the settings as the worker would see them, with the environment winning.

    Raises:
        StackError: the stack file cannot be used.
        ConfigError: a setting is invalid (the message names it).
    """
    values: dict[str, str] = dict(ENV_DEFAULTS)
    front_door = None
    source = "environment"
    if stack is not None:
        try:
            text = stack.read_text()
        except OSError as exc:
            raise StackError(f"cannot read {stack}: {exc.strerror}") from None
        found = stack_function(text, environ, function, read=lambda name: (stack.parent / name).read_text())
        values.update(found.environment)
        front_door = f"{found.gateway}/function/{found.name}"
        source = f"{stack} ({found.name})"
    values.update(environ)
    settings = Settings.from_env(values)
    worker = WorkerSettings.from_env(values)
    front_door = url or environ.get("QUEUE_WORKER_URL") or front_door or f"http://127.0.0.1:{settings.port}"
    return Config(settings, worker, front_door.rstrip("/"), source)


__all__ = ["Config", "ConfigError", "StackError", "StackFunction", "expand", "load", "stack_function"]
