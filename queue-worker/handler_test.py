"""Build-time checks of the queue-worker handler (run in the image's test stage)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import structlog
from prometheus_client import CollectorRegistry

from runtime import ConfigError, Context, DeadLetter, Event, Settings

from .handler import handle, on_shutdown, on_startup


def _context(environ: dict[str, str]) -> Context:
    return Context(
        Settings.from_env({"queue_name": "faas-request"}), structlog.get_logger(), CollectorRegistry(), environ=environ
    )


def test_a_bad_setting_stops_start_up_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="backoff"):
        asyncio.run(on_startup(_context({"backoff": "sometimes"})))


def test_an_undecodable_message_is_dead_lettered_without_a_call() -> None:
    async def scenario() -> object:
        context = _context({"gateway_url": "http://127.0.0.1:9"})
        await on_startup(context)
        try:
            event = Event(b"not json", {}, "faas-request", 1, 1, datetime.now(UTC))
            return await handle(event, context)
        finally:
            await on_shutdown(context)

    outcome = asyncio.run(scenario())
    assert isinstance(outcome, DeadLetter)
    assert outcome.reason == "undecodable"
