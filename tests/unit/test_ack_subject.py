"""Reading a delivery from its ack subject gives what nats-py's own ``Msg.metadata`` gives."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nats.aio.msg import Msg

from runtime.ack_subject import Delivery, NotJetStream, parse

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_0123456789", min_size=1, max_size=12)
#: Timestamps too: nats-py turns them into datetimes, which end in the year 9999.
_counts = st.integers(min_value=0, max_value=253_402_300_799 * 10**9)


def _theirs(reply: str) -> tuple[object, ...]:
    metadata = Msg(None, reply=reply).metadata  # type: ignore[arg-type]  # no client needed to read it
    sequence = metadata.sequence.stream if metadata.sequence else None
    return metadata.stream, metadata.consumer, metadata.num_delivered, sequence, metadata.timestamp


def _ours(reply: str) -> tuple[object, ...]:
    delivery = parse(reply)
    # As the consumer turns it into Event.published_at.
    published_at = datetime.fromtimestamp(delivery.timestamp_ns / 1e9, UTC)
    return delivery.stream, delivery.consumer, delivery.attempt, delivery.stream_seq, published_at


@given(stream=_names, consumer=_names, numbers=st.lists(_counts, min_size=5, max_size=5))
def test_the_original_form_reads_as_nats_py_reads_it(stream: str, consumer: str, numbers: list[int]) -> None:
    delivered, stream_seq, consumer_seq, timestamp, pending = numbers
    reply = f"$JS.ACK.{stream}.{consumer}.{delivered}.{stream_seq}.{consumer_seq}.{timestamp}.{pending}"

    assert _ours(reply) == _theirs(reply)
    assert parse(reply) == Delivery(stream, consumer, delivered, stream_seq, timestamp)


@given(
    domain=st.one_of(st.just("_"), _names),
    stream=_names,
    consumer=_names,
    numbers=st.lists(_counts, min_size=5, max_size=5),
    extra=st.lists(_names, max_size=2),
)
def test_the_form_with_a_domain_reads_as_nats_py_reads_it(
    domain: str, stream: str, consumer: str, numbers: list[int], extra: list[str]
) -> None:
    delivered, stream_seq, consumer_seq, timestamp, pending = numbers
    tail = "".join(f".{token}" for token in extra)
    numbered = f"{delivered}.{stream_seq}.{consumer_seq}.{timestamp}.{pending}"
    reply = f"$JS.ACK.{domain}.ACCHASH.{stream}.{consumer}.{numbered}{tail}"

    assert _ours(reply) == _theirs(reply)
    assert parse(reply) == Delivery(stream, consumer, delivered, stream_seq, timestamp)


@pytest.mark.parametrize(
    "reply",
    ["", "_INBOX.abc", "$JS.ACK.s.c.1.2.3", "$JS.NAK.s.c.1.2.3.4.5", "$JS.ACK.s.c.one.2.3.4.5", "$JS.ACK.s.c.1.2.3.4"],
)
def test_anything_else_is_not_a_jetstream_delivery(reply: str) -> None:
    with pytest.raises(NotJetStream):
        parse(reply)
