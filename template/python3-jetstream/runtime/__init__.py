"""A JetStream connector that triggers a Python function, packaged as an OpenFaaS template.

The public surface is what a function needs: the :class:`Event` it receives, the
:class:`Context` it shares, the outcomes it returns, and the helpers for its own settings.
"""

from __future__ import annotations

from .auth import read_secret, secret_folder
from .contract import Ack, ConsumerNeeds, Context, DeadLetter, Event, Function, Outcome, Retry, Terminate
from .durations import format_duration, parse_duration
from .env import Env
from .errors import EXIT_CONFIG, ConfigError, ConnectorError, HandlerLoadError, NotConnected, describe
from .lanes import MAX_INFLIGHT_HEADER, function_subject
from .loop_metrics import LoopCounter, LoopGauge, LoopHistogram
from .metrics import DURATION_BUCKETS
from .settings import Settings
from .tasks import cancel_and_wait

__all__ = [
    "DURATION_BUCKETS",
    "EXIT_CONFIG",
    "MAX_INFLIGHT_HEADER",
    "Ack",
    "ConfigError",
    "ConnectorError",
    "ConsumerNeeds",
    "Context",
    "DeadLetter",
    "Env",
    "Event",
    "Function",
    "HandlerLoadError",
    "LoopCounter",
    "LoopGauge",
    "LoopHistogram",
    "NotConnected",
    "Outcome",
    "Retry",
    "Settings",
    "Terminate",
    "cancel_and_wait",
    "describe",
    "format_duration",
    "function_subject",
    "parse_duration",
    "read_secret",
    "secret_folder",
]
