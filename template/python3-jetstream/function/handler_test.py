"""Tests of the starter function; run with ``python -m pytest function``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import structlog
from prometheus_client import CollectorRegistry

from runtime import Ack, Context, Event, Retry, Settings

from .handler import handle


def _event(data: bytes) -> Event:
    return Event(data, {}, "faas-request", 1, 1, datetime.now(UTC))


def _context() -> Context:
    return Context(Settings.from_env({"queue_name": "faas-request"}), structlog.get_logger(), CollectorRegistry())


def test_a_message_with_data_is_acked() -> None:
    assert asyncio.run(handle(_event(b"hello"), _context())) == Ack()


def test_an_empty_message_is_retried_later() -> None:
    outcome = asyncio.run(handle(_event(b""), _context()))
    assert isinstance(outcome, Retry)
    assert outcome.delay_s > 0
