"""The queue-worker's own settings (the runtime reads the NATS and consumer ones)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from runtime import ConfigError, Env, read_secret, secret_folder
from runtime.backoff import BACKOFF_MODES

from .callbacks.guard import Allowlist
from .metrics import MAX_FUNCTION_SERIES
from .retry import RetryPolicy, parse_codes
from .wire.limits import Limits

#: Statuses retried unless ``retry_http_codes`` says otherwise (the OpenFaaS chart's list).
DEFAULT_RETRY_CODES = "408,429,500,502,503,504"
#: Calls whose status is kept at most: 85 MB of nats-server memory when full (``status/store.py``).
DEFAULT_STATUS_MAX_CALLS = 100_000


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
    #: Functions with metric series of their own; the rest share ``function_name="(other)"``.
    max_function_series: int
    tls_insecure: bool
    debug: bool
    #: How long call status is kept; 0 switches call status and cancelling off.
    call_status_ttl_s: float
    #: Most calls whose status is kept (each costs nats-server memory while it is).
    call_status_max_calls: int
    call_status_bucket: str
    #: Object store bucket for results too large to travel in a callback job.
    callback_results_bucket: str
    check_function_exists: bool
    #: Copy each function's ``com.openfaas.retry.*`` annotations into the requests the front door queues.
    retry_annotations: bool
    function_cache_ttl_s: float
    #: Basic auth for the front door's routes, from the OpenFaaS secrets below, or None.
    front_door_credentials: tuple[str, str] | None
    #: Basic auth for the gateway's system API, when the secrets exist.
    gateway_credentials: tuple[str, str] | None
    callback_allowlist: Allowlist
    #: Most header values, header bytes and body bytes a queued request may carry
    #: (``max_body`` 0: up to the NATS server's max payload).
    limits: Limits

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
        settings = cls(
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
            max_function_series=env.integer("max_function_series", MAX_FUNCTION_SERIES, minimum=1, maximum=100_000),
            tls_insecure=env.boolean("tls_insecure", False),
            debug=env.boolean("debug", False),
            call_status_ttl_s=env.duration("call_status_ttl", 24 * 3600.0),
            call_status_max_calls=env.integer(
                "call_status_max_calls", DEFAULT_STATUS_MAX_CALLS, minimum=1, maximum=1_000_000_000
            ),
            call_status_bucket=env.string("call_status_bucket", "queue-worker-calls"),
            callback_results_bucket=env.string("callback_results_bucket", "queue-worker-results"),
            check_function_exists=env.boolean("check_function_exists", False),
            retry_annotations=env.boolean("retry_annotations", True),
            function_cache_ttl_s=env.duration("function_cache_ttl", 5.0),
            front_door_credentials=_front_door_credentials(env),
            gateway_credentials=_basic_auth(env),
            callback_allowlist=_allowlist(env),
            limits=Limits(
                max_headers=env.integer("max_request_headers", 100, minimum=1, maximum=100_000),
                max_header_bytes=env.integer("max_header_bytes", 64 * 1024, minimum=256, maximum=16 * 1024 * 1024),
                max_body=env.integer("max_request_size", 0, minimum=0, maximum=64 * 1024 * 1024),
            ),
        )
        for policy, longest, shortest in (
            (settings.retry, "max_retry_wait", "initial_retry_wait"),
            (settings.callback_retry, "callback_max_retry_wait", "callback_initial_retry_wait"),
        ):
            if policy.max_wait_s < policy.min_wait_s:
                raise ConfigError(
                    longest, env.string(longest, ""), f"expected at least {shortest} ({policy.min_wait_s:g}s)"
                )
        return settings


def _allowlist(env: Env) -> Allowlist:
    text = env.string("callback_allowlist", "")
    try:
        return Allowlist.parse(text)
    except ValueError as exc:
        raise ConfigError("callback_allowlist", text, f"expected hosts and http(s) URL prefixes; {exc}") from None


def _gateway_url(env: Env) -> str:
    value = env.string("gateway_url", "http://gateway.openfaas:8080")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError("gateway_url", value, "expected an http:// or https:// URL")
    return value.rstrip("/")


def _basic_auth(env: Env) -> tuple[str, str] | None:
    """The gateway's ``basic-auth-user`` and ``basic-auth-password`` secrets, if mounted."""
    folder = secret_folder(env)
    user, password = read_secret(folder, "basic-auth-user"), read_secret(folder, "basic-auth-password")
    return (user, password) if user is not None and password is not None else None


def _front_door_credentials(env: Env) -> tuple[str, str] | None:
    if not env.boolean("front_door_basic_auth", False):
        return None
    credentials = _basic_auth(env)
    if credentials is None:
        raise ConfigError(
            "front_door_basic_auth",
            "true",
            f"expected the secrets basic-auth-user and basic-auth-password in {secret_folder(env)}",
        )
    return credentials
