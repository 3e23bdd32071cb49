"""Which pre-made consumers would strand a request: every setting that decides whether one can
finish, each alone and together."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.js.api import AckPolicy, ConsumerConfig

from runtime import ConsumerNeeds, Settings
from runtime.connection import consumer_problems

SETTINGS = Settings.from_env({"queue_name": "faas-request", "handler_error_attempts": "10"})
NEEDS = ConsumerNeeds(min_deliver=100, because="max_retry_attempts")


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        (ConsumerConfig(max_deliver=3), "max_deliver=3, and a message may need 100 deliveries (max_retry_attempts)"),
        (ConsumerConfig(ack_policy=AckPolicy.NONE), "ack_policy"),
        (ConsumerConfig(ack_policy=AckPolicy.ALL), "ack_policy"),
        (ConsumerConfig(filter_subject="other"), "not queue_name='faas-request'"),
        (ConsumerConfig(filter_subjects=["a", "b"]), "not queue_name='faas-request'"),
        (ConsumerConfig(deliver_subject="push.here"), "push consumer"),
    ],
)
def test_each_setting_that_strands_a_request_is_named(config: ConsumerConfig, problem: str) -> None:
    [found] = consumer_problems(config, SETTINGS, NEEDS)

    assert problem in found


@given(
    max_deliver=st.sampled_from([None, -1, 0, 1, 5, 99, 100, 101, 10_000]),
    ack=st.sampled_from([None, AckPolicy.EXPLICIT, AckPolicy.NONE, AckPolicy.ALL]),
    filter_subject=st.sampled_from([None, "", "faas-request", "elsewhere"]),
)
def test_a_consumer_passes_exactly_when_every_request_can_finish(
    max_deliver: int | None, ack: AckPolicy | None, filter_subject: str | None
) -> None:
    config = ConsumerConfig(max_deliver=max_deliver, ack_policy=ack, filter_subject=filter_subject)

    problems = consumer_problems(config, SETTINGS, NEEDS)

    fine = (
        (max_deliver in (None, -1, 0) or max_deliver >= 100)
        and ack in (None, AckPolicy.EXPLICIT)
        and filter_subject in (None, "", "faas-request")
    )
    assert (problems == []) == fine
