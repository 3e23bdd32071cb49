"""The limits a call-status bucket is brought to, whatever state an earlier version or another
setting left its stream in."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from nats.js.api import DiscardPolicy, StreamConfig

from function.status.store import bucket_limits

#: Durations as nats-py reads them back from the server: nanoseconds over 1e9, or unset.
seconds = st.one_of(st.none(), st.integers(0, 10**15).map(lambda ns: ns / 1e9))
caps = st.one_of(st.none(), st.just(-1), st.integers(1, 10**9))


@st.composite
def bucket_streams(draw: st.DrawFn) -> StreamConfig:
    """A key-value bucket's stream as nats-py makes it, with any limits at all."""
    bucket = draw(st.from_regex(r"[a-zA-Z0-9_-]{1,20}", fullmatch=True))
    return StreamConfig(
        name=f"KV_{bucket}",
        subjects=[f"$KV.{bucket}.>"],
        max_age=draw(seconds),
        max_msgs=draw(caps),
        discard=draw(st.sampled_from([None, DiscardPolicy.OLD, DiscardPolicy.NEW])),
        duplicate_window=draw(seconds),
        max_msgs_per_subject=1,
        allow_rollup_hdrs=True,
        deny_delete=True,
    )


ttls = st.integers(1, 10**15).map(lambda ns: ns / 1e9)


@given(config=bucket_streams(), ttl_s=ttls, max_calls=st.one_of(st.just(-1), st.integers(1, 10**9)))
def test_once_changed_a_bucket_has_the_limits_and_needs_no_more_changes(
    config: StreamConfig, ttl_s: float, max_calls: int
) -> None:
    changes = bucket_limits(config, ttl_s, max_calls)
    changed = replace(config, **changes)

    assert bucket_limits(changed, ttl_s, max_calls) == {}
    assert round(changed.max_age * 1e9) == round(ttl_s * 1e9)  # type: ignore[operator]
    assert (-1 if changed.max_msgs is None else changed.max_msgs) == max_calls  # unset is no cap
    assert changed.discard == DiscardPolicy.OLD
    # The server refuses a stream whose duplicate window outlasts its messages.
    assert round((changed.duplicate_window or 0) * 1e9) <= round(ttl_s * 1e9)
    # Only the limits are touched: the key-value layout stays as nats-py made it.
    untouched = {"max_age", "max_msgs", "discard", "duplicate_window"}
    assert set(changes) <= untouched
    assert {k: v for k, v in vars(changed).items() if k not in untouched} == {
        k: v for k, v in vars(config).items() if k not in untouched
    }


@given(config=bucket_streams(), ttl_s=ttls, max_calls=st.integers(1, 10**9))
def test_a_bucket_already_at_its_limits_is_left_alone(config: StreamConfig, ttl_s: float, max_calls: int) -> None:
    at_limits = replace(
        config,
        max_age=round(ttl_s * 1e9) / 1e9,  # as it reads back from the server
        max_msgs=max_calls,
        discard=DiscardPolicy.OLD,
        duplicate_window=min(config.duplicate_window or 0.0, ttl_s),
    )
    assert bucket_limits(at_limits, ttl_s, max_calls) == {}
