"""The runtime's settings, read once from the environment into a frozen value."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from .auth import NatsAuth
from .env import Env
from .errors import ConfigError

#: Log encodings: ``console`` for people at a terminal, ``json`` for Loki or ELK.
LOG_ENCODINGS = ("console", "json")
#: ``static``: one consumer for the queue, first in first out. ``function``: a subject and a
#: consumer per function, fair shares between them and adaptive concurrency (see lanes.py).
SCALING_MODES = ("static", "function")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the connector needs; durations are float seconds."""

    nats_servers: tuple[str, ...]
    queue_name: str
    stream: str
    durable: str
    dead_letter_stream: str
    stream_replicas: int
    max_inflight: int
    scaling_mode: str
    #: Function mode: how long a per-function consumer outlives its last pull (the server deletes it).
    consumer_inactive_threshold_s: float
    #: Adaptive concurrency per function (function mode only).
    limiter_enabled: bool
    #: Deliveries on which the handler raised before the message becomes a dead letter.
    handler_error_attempts: int
    ack_wait_s: float
    fetch_wait_s: float
    #: How often the client pings the server, and how many unanswered pings mean the link is dead.
    ping_interval_s: float
    max_outstanding_pings: int
    shutdown_timeout_s: float
    port: int
    metrics_port: int
    metrics_namespace: str
    stream_metrics_interval_s: float
    log_encoding: str
    debug: bool
    client_name: str
    nats_auth: NatsAuth

    @property
    def function_mode(self) -> bool:
        """A subject, a consumer and a fair share per function (``scaling_mode=function``)."""
        return self.scaling_mode == "function"

    @property
    def dead_letter_subject(self) -> str:
        """Where this queue's dead letters go: ``<dead_letter_stream>.<queue_name>``."""
        return f"{self.dead_letter_stream}.{self.queue_name}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and validate every runtime setting.

        Raises:
            ConfigError: a variable is invalid; the message names it.
        """
        env = Env(environ)
        if env.raw("queue_name") is None:
            # No default: a function made from the template must not join another's queue (the
            # queue-worker's faas-request, say) and take its messages by accident.
            raise ConfigError("queue_name", "", "required: the subject this function consumes")
        queue_name = _subject_token(env, "queue_name", "")
        ack_wait_s = env.duration("ack_wait", 60.0, minimum=1.0)
        scaling_mode = env.choice("scaling_mode", "static", SCALING_MODES)
        # Read (and checked) in either mode, as the OpenFaaS Pro chart sets it; static mode has
        # one consumer for every function, so nothing there to adapt.
        limiter_enabled = env.boolean("limiter_enabled", True) and scaling_mode == "function"
        return cls(
            nats_servers=_nats_servers(env),
            queue_name=queue_name,
            stream=_subject_token(env, "nats_stream", queue_name),
            durable=_subject_token(env, "nats_durable", f"{queue_name}-workers"),
            dead_letter_stream=_subject_token(env, "dead_letter_stream", f"{queue_name}-dead-letter"),
            stream_replicas=env.integer("nats_stream_replicas", 1, minimum=1, maximum=5),
            max_inflight=env.integer("max_inflight", 50, minimum=1, maximum=100_000),
            scaling_mode=scaling_mode,
            consumer_inactive_threshold_s=env.duration("consumer_inactive_threshold", 30.0, minimum=1.0),
            limiter_enabled=limiter_enabled,
            handler_error_attempts=env.integer("handler_error_attempts", 10, minimum=1, maximum=10_000),
            ack_wait_s=ack_wait_s,
            fetch_wait_s=env.duration("fetch_wait", 1.0, minimum=0.01),
            ping_interval_s=env.duration("nats_ping_interval", 2.0, minimum=0.1),
            max_outstanding_pings=env.integer("nats_max_outstanding_pings", 2, minimum=1, maximum=100),
            shutdown_timeout_s=env.duration("shutdown_timeout", 25.0),
            port=env.integer("port", 8080, minimum=0, maximum=65535),
            metrics_port=env.integer("metrics_port", 8081, minimum=0, maximum=65535),
            metrics_namespace=env.string("metrics_namespace", "jetstream"),
            stream_metrics_interval_s=env.duration("stream_metrics_interval", 5.0, minimum=0.1),
            log_encoding=env.choice("log_encoding", "console", LOG_ENCODINGS),
            debug=env.boolean("debug", False),
            client_name=env.string("nats_client_name", socket.gethostname()),
            nats_auth=NatsAuth.from_env(env),
        )


def _subject_token(env: Env, name: str, default: str) -> str:
    value = env.string(name, default)
    if any(c in value for c in " \t.*>") or not value:
        raise ConfigError(name, value, "expected a name without spaces, dots, '*' or '>'")
    return value


def _nats_servers(env: Env) -> tuple[str, ...]:
    """``nats_url`` (a comma-separated list) wins over ``nats_host`` and ``nats_port``."""
    listed = env.raw("nats_url")
    if listed is not None:
        servers = tuple(part.strip() for part in listed.split(",") if part.strip())
        for server in servers:
            parts = urlsplit(server if "://" in server else f"nats://{server}")
            if parts.scheme not in ("nats", "tls", "ws", "wss") or not parts.hostname:
                raise ConfigError("nats_url", listed, "expected nats://host:port, comma-separated")
        return servers
    host = env.string("nats_host", "nats")
    port = env.integer("nats_port", 4222, minimum=1, maximum=65535)
    return (f"nats://{host}:{port}",)
