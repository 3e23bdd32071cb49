from __future__ import annotations

import pytest

from function.handler import ENV_DEFAULTS
from function.settings import WorkerSettings
from runtime import ConfigError, Settings


def test_the_queue_workers_defaults_follow_the_openfaas_chart() -> None:
    runtime = Settings.from_env(ENV_DEFAULTS)
    worker = WorkerSettings.from_env({})

    assert runtime.nats_servers == ("nats://nats:4222",)
    assert (runtime.stream, runtime.queue_name, runtime.durable) == ("faas-request", "faas-request", "faas-workers")
    assert (runtime.ack_wait_s, runtime.port, runtime.metrics_port) == (60.0, 8080, 8081)
    assert worker.gateway_url == "http://gateway.openfaas:8080"
    assert worker.retry.codes == frozenset({408, 429, 500, 502, 503, 504})
    assert (worker.retry.attempts, worker.retry.min_wait_s, worker.retry.max_wait_s) == (100, 10.0, 120.0)
    assert worker.retry.backoff == "exponential"
    assert (worker.callback_retry.attempts, worker.callback_retry.min_wait_s) == (10, 1.0)
    assert worker.max_message_age_s == 0
    assert runtime.dead_letter_subject == "faas-dead-letter.faas-request"


def test_the_templates_defaults_name_no_queue_of_the_queue_workers() -> None:
    with pytest.raises(ConfigError, match="queue_name"):
        Settings.from_env({})
    mine = Settings.from_env({"queue_name": "orders"})

    assert (mine.stream, mine.durable, mine.dead_letter_stream) == ("orders", "orders-workers", "orders-dead-letter")
    shared_subject = Settings.from_env({"queue_name": "faas-request"})
    assert shared_subject.durable != ENV_DEFAULTS["nats_durable"]


def test_nats_url_lists_servers_and_wins_over_host_and_port() -> None:
    settings = Settings.from_env({"queue_name": "q", "nats_url": "nats://a:1, nats://b:2", "nats_host": "ignored"})

    assert settings.nats_servers == ("nats://a:1", "nats://b:2")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("max_inflight", "-1"),
        ("max_inflight", "0"),
        ("max_inflight", "lots"),
        ("ack_wait", "60"),
        ("ack_wait", "500ms"),
        ("nats_port", "99999"),
        ("log_encoding", "xml"),
        ("debug", "yes please"),
        ("queue_name", "a.b"),
        ("nats_url", "http://x"),
        ("port", "http"),
        ("shutdown_timeout", "soon"),
        ("dead_letter_stream", "dead.letters"),
    ],
)
def test_a_bad_runtime_setting_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"queue_name": "q", variable: value})

    assert caught.value.variable == variable
    assert variable in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("gateway_url", "gateway:8080"),
        ("upstream_timeout", "1 minute"),
        ("max_retry_attempts", "0"),
        ("initial_retry_wait", "-1s"),
        ("max_retry_wait", "2"),
        ("retry_http_codes", "500,abc"),
        ("retry_http_codes", "700"),
        ("backoff", "linear"),
        ("tls_insecure", "maybe"),
        ("max_message_age", "a day"),
        ("callback_retry_attempts", "0"),
        ("callback_initial_retry_wait", "1"),
        ("callback_max_retry_wait", "-5s"),
        ("call_status_max_calls", "0"),
        ("call_status_max_calls", "unlimited"),
    ],
)
def test_a_bad_worker_setting_names_the_variable_and_what_it_accepts(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        WorkerSettings.from_env({variable: value})

    assert caught.value.variable == variable
    assert "expected" in str(caught.value)
