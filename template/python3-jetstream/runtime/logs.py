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
    """Mask secret-looking fields, including inside nested header maps."""
    return _mask(event_dict)  # type: ignore[no-any-return]


def configure(*, encoding: str, debug: bool, stream: TextIO | None = None) -> FilteringBoundLogger:
    """Configure structlog process-wide and return the root logger.

    ``console`` renders ``time level event key=value...`` (colours only on a terminal);
    ``json`` renders ``{"ts": ..., "level": ..., "msg": ..., ...}`` like zap's production encoder.
    """
    out = stream or sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        redact,
    ]
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
