"""structlog set-up: ``console`` for people, ``json`` (one object a line) for Loki or ELK.

Event names follow the OpenFaaS queue-worker (``Invoke``, ``Invoked``, ``Posted result``) and
fields are camelCase. Credentials never reach a log line: any field or header named like one is
masked by :func:`redact`, whatever the level, and bodies are logged only with ``debug``.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

#: Field and header names whose values are never written, compared in lower case.
SECRET_NAMES = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "password", "token", "secret"}
)
#: What a secret is replaced with.
MASK = "[redacted]"


def _mask(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: MASK if str(k).lower() in SECRET_NAMES else _mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask(v) for v in value]
    return value


#: Builtin types, not the Mapping ABC, and a tuple made once: an ABC check, or a union built
#: at each call, costs more than the rest of the loop.
_CONTAINERS = (dict, list, tuple)


#: Field names seen before not to name a secret. A line whose names are all among them and
#: whose values are all plain scalars is let through in two set operations, without a look at
#: each field (0.4 against 1.2 µs for the per-invocation line): most lines carry the same
#: dozen names. Bounded, since a caller could log under names of its choosing.
_PLAIN_NAMES: set[str] = set()
_PLAIN_NAMES_MAX = 4096
#: Exact types, not ``isinstance``: a subclass (an enum, a mapping) takes the field-by-field way.
_SCALARS = frozenset({str, int, float, bool, type(None)})


def redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Mask secret-looking fields, including inside nested header maps.

    Most events have flat fields and no secret: those pass through without being copied.
    """
    if _PLAIN_NAMES.issuperset(event_dict) and _SCALARS.issuperset(map(type, event_dict.values())):
        return event_dict
    for key, value in event_dict.items():
        if key.lower() in SECRET_NAMES or isinstance(value, _CONTAINERS):
            return _mask(event_dict)  # type: ignore[no-any-return]
        if len(_PLAIN_NAMES) < _PLAIN_NAMES_MAX:
            _PLAIN_NAMES.add(key)
    return event_dict


#: For what orjson refuses (a lone surrogate, an integer beyond 64 bits, a key that is not a
#: string): ``json`` writes it.
_JSON = json.JSONEncoder(default=repr)
#: The envelope's names. A field of the same name is written as ``fields.<name>``, as logrus
#: writes a clashing field, rather than replacing the time, level or message a pipeline reads.
ENVELOPE = frozenset({"ts", "level", "msg"})
#: structlog method names that are not level names.
_LEVELS = {"warn": "warning", "exception": "error", "fatal": "critical", "msg": "info"}


def _fields(method: str, event_dict: EventDict) -> tuple[str, str, EventDict]:
    """The level, the event and the remaining fields (redacted, an exception rendered)."""
    fields = redact(None, method, event_dict)
    if fields.get("exc_info"):
        fields = structlog.processors.format_exc_info(None, method, fields)
    else:
        fields.pop("exc_info", None)
    return _LEVELS.get(method, method), str(fields.pop("event", "")), fields


def render_json(_: WrappedLogger, method: str, event_dict: EventDict) -> str:
    """``{"ts": <epoch seconds>, "level": ..., "msg": ..., ...}`` on one line, as zap's
    production encoder writes it (epoch seconds are what pipelines built for the OpenFaaS
    worker expect, and cheaper than a formatted time).

    The whole pipeline in one step: the per-invocation line is on the hot path, and structlog's
    chain of five processors for the same line cost a fifth more.
    """
    level, event, fields = _fields(method, event_dict)
    line = {"ts": time.time(), "level": level, "msg": event}
    if ENVELOPE.isdisjoint(fields):
        line.update(fields)
    else:
        line.update((f"fields.{key}" if key in ENVELOPE else key, value) for key, value in fields.items())
    try:
        # A fifth of json's time for the per-invocation line (0.7 against 3.6 µs).
        return orjson.dumps(line, default=repr).decode()
    except (orjson.JSONEncodeError, UnicodeDecodeError):
        return _JSON.encode(line)


def render_console(_: WrappedLogger, method: str, event_dict: EventDict) -> str:
    """``2026-11-28T03:00:00.123Z info    Invoked   key=value ...``, then any traceback."""
    level, event, fields = _fields(method, event_dict)
    exception = fields.pop("exception", None)
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
    pairs = " ".join(
        f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}" for key, value in fields.items()
    )
    text = f"{stamp} {level:<7} {event:<24} {pairs}".rstrip()
    return f"{text}\n{exception}" if exception else text


class LoopWriter:
    """structlog's logger: the lines logged on the event loop are written together once the
    loop's current step is done, not each with a write and a flush of its own.

    structlog's ``PrintLogger`` prints and flushes every line: at 100 in flight the per-call
    ``Invoked`` line cost 6-7% of the worker's CPU under ``make bench`` (py-spy), most of it the
    system call. Off the loop (start-up, a thread, after the loop) a line is written at once, and
    what is waiting is written at exit, so a line is lost only with the process killed in the
    step that logged it.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._waiting: list[str] = []
        atexit.register(self.flush)

    def msg(self, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: now, leaving the loop's lines alone
            self._write([message])
            return
        if not self._waiting:
            try:
                loop.call_soon(self.flush)
            except RuntimeError:  # the loop is closing
                self._write([message])
                return
        self._waiting.append(message)

    log = debug = info = warning = warn = error = err = critical = fatal = exception = failure = msg

    def flush(self) -> None:
        """Write the lines waiting (on the loop's thread, or at exit)."""
        lines, self._waiting = self._waiting, []
        if lines:
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
        except ValueError:  # closed: at exit, the stream a test gave
            pass


def configure(*, encoding: str, debug: bool, stream: TextIO | None = None) -> FilteringBoundLogger:
    """Configure structlog process-wide and return the root logger (``encoding`` is
    ``console`` or ``json``)."""
    structlog.configure(
        processors=[render_json if encoding == "json" else render_console],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if debug else logging.INFO),
        logger_factory=_writer_factory(stream or sys.stderr),
        cache_logger_on_first_use=True,
    )
    # The bound logger itself, not structlog's lazy proxy: each message binds its fields to it,
    # and the proxy's bind costs a call more than the logger's.
    logger: FilteringBoundLogger = structlog.get_logger().bind()
    return logger


def _writer_factory(stream: TextIO) -> Any:
    """One writer per stream, whatever the logger's name (as ``PrintLoggerFactory`` does)."""
    writer = LoopWriter(stream)
    return lambda *_: writer
