"""The queue-worker's own settings (the runtime reads the NATS and consumer ones)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from runtime import ConfigError, Env

from .backoff import BACKOFF_MODES
from .policy import RetryPolicy, parse_codes

#: Statuses retried unless ``retry_http_codes`` says otherwise (the OpenFaaS chart's list).
DEFAULT_RETRY_CODES = "408,429,500,502,503,504"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Where to invoke, how long to wait, and how to retry."""

    gateway_url: str
    upstream_timeout_s: float
    callback_timeout_s: float
    retry: RetryPolicy
    #: How a failed callback is retried on its own; ``attempts`` counts the first post too.
    callback_retry: RetryPolicy
    #: Older messages are dead-lettered instead of invoked; 0 means no limit.
    max_message_age_s: float
    function_namespace: str
    tls_insecure: bool
    debug: bool

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> WorkerSettings:
        """Read and validate the worker's variables.

        Raises:
            ConfigError: a variable is invalid; the message names it.
        """
        env = Env(environ)
        codes_raw = env.string("retry_http_codes", DEFAULT_RETRY_CODES)
        try:
            codes = parse_codes(codes_raw)
        except ValueError:
            raise ConfigError(
                "retry_http_codes", codes_raw, "expected comma-separated HTTP statuses from 100 to 599"
            ) from None
        backoff = env.choice("backoff", "exponential", BACKOFF_MODES)
        return cls(
            gateway_url=_gateway_url(env),
            upstream_timeout_s=env.duration("upstream_timeout", 60.0, minimum=0.001),
            callback_timeout_s=env.duration("callback_timeout", 10.0, minimum=0.001),
            retry=RetryPolicy(
                attempts=env.integer("max_retry_attempts", 100, minimum=1, maximum=1_000_000),
                codes=codes,
                min_wait_s=env.duration("initial_retry_wait", 10.0),
                max_wait_s=env.duration("max_retry_wait", 120.0),
                backoff=backoff,
            ),
            callback_retry=RetryPolicy(
                attempts=env.integer("callback_retry_attempts", 10, minimum=1, maximum=1_000_000),
                codes=frozenset(),
                min_wait_s=env.duration("callback_initial_retry_wait", 1.0),
                max_wait_s=env.duration("callback_max_retry_wait", 60.0),
                backoff=backoff,
            ),
            max_message_age_s=env.duration("max_message_age", 0.0),
            function_namespace=env.string("function_namespace", "openfaas-fn"),
            tls_insecure=env.boolean("tls_insecure", False),
            debug=env.boolean("debug", False),
        )


def _gateway_url(env: Env) -> str:
    value = env.string("gateway_url", "http://gateway.openfaas:8080")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("gateway_url", value, "expected an http:// or https:// URL")
    return value.rstrip("/")
