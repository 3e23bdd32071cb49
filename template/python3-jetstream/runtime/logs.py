"""structlog set-up: ``console`` for people, ``json`` (one object a line) for Loki or ELK.

Event names follow the OpenFaaS queue-worker (``Invoke``, ``Invoked``, ``Posted result``) and
fields are camelCase. Credentials never reach a log line: any field or header named like one is
masked by :func:`redact`, whatever the level, and bodies are logged only with ``debug``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

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


def redact(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Mask secret-looking fields, including inside nested header maps.

    Most events have flat fields and no secret: those pass through without being copied.
    """
    for key, value in event_dict.items():
        # Builtin types, not the Mapping ABC: an ABC check costs more than the rest of this loop.
        if key.lower() in SECRET_NAMES or isinstance(value, dict | list | tuple):
            return _mask(event_dict)  # type: ignore[no-any-return]
    return event_dict


def configure(*, encoding: str, debug: bool, stream: TextIO | None = None) -> FilteringBoundLogger:
    """Configure structlog process-wide and return the root logger.

    ``console`` renders ``time level event key=value...`` (colours only on a terminal);
    ``json`` renders ``{"ts": <epoch seconds>, "level": ..., "msg": ..., ...}`` like zap's
    production encoder.
    """
    out = stream or sys.stderr
    # zap's production encoder writes epoch seconds: cheaper than a formatted time, and what
    # Loki and ELK pipelines built for the OpenFaaS worker expect.
    stamp = structlog.processors.TimeStamper(fmt=None if encoding == "json" else "iso", utc=True, key="ts")
    shared: list[Any] = [structlog.processors.add_log_level, stamp, redact]
    renderer: list[Any]
    if encoding == "json":
        renderer = [
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("msg"),
            structlog.processors.JSONRenderer(),
        ]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=out.isatty(), timestamp_key="ts")]
    structlog.configure(
        processors=shared + renderer,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if debug else logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    logger: FilteringBoundLogger = structlog.get_logger()
    return logger
