"""The call-status store against a real nats-server: whatever the interleaving of calls starting,
becoming ``running`` and ending, each call's key is written ``running`` at most once and never
after its outcome."""

from __future__ import annotations

import asyncio
import json
import uuid

import nats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.msg import Msg

from function.status.state import CallState, Record
from function.status.store import CallStatus
from harness.natsd import NatsServer

#: Steps of a schedule: start call i, end call i, or let the loop run k times (so the store's
#: sweep and its sender run between the other steps, or do not).
Step = tuple[str, int]


@st.composite
def schedules(draw: st.DrawFn) -> list[Step]:
    calls = draw(st.integers(1, 8))
    steps: list[Step] = []
    started: list[int] = []
    pending = list(range(calls))
    while pending or started:
        choices = (["start"] if pending else []) + (["end"] if started else []) + ["yield"]
        kind = draw(st.sampled_from(choices))
        if kind == "start":
            steps.append(("start", pending.pop(0)))
            started.append(steps[-1][1])
        elif kind == "end":
            steps.append(("end", started.pop(draw(st.integers(0, len(started) - 1)))))
        else:
            steps.append(("yield", draw(st.integers(1, 4))))
    return steps


async def _run(natsd: NatsServer, schedule: list[Step], after_s: float) -> dict[str, list[str]]:
    nc = await nats.connect(natsd.url)
    bucket = f"calls-{uuid.uuid4().hex[:8]}"
    store = CallStatus(bucket, ttl_s=60, running_after_s=after_s)
    written: dict[str, list[str]] = {}

    async def record(msg: Msg) -> None:
        value = json.loads(msg.data)
        written.setdefault(value["callId"], []).append(value["state"])

    try:
        await store.connect(nc)
        watch = await nc.subscribe(f"$KV.{bucket}.>", cb=record)
        for kind, n in schedule:
            if kind == "start":
                store.started(f"call-{n}", "fn", 1)
            elif kind == "end":
                await store.write(Record(f"call-{n}", "fn", CallState.SUCCEEDED, {"status": 200}))
            else:
                for _ in range(n):
                    await asyncio.sleep(0)
        await store.close()
        await nc.flush()
        ended = {f"call-{n}" for kind, n in schedule if kind == "end"}
        for _ in range(500):
            if all(written.get(call, [""])[-1] == "succeeded" for call in ended):
                break
            await asyncio.sleep(0.01)
        await watch.unsubscribe()
        await nc.jetstream().delete_key_value(bucket)
    finally:
        await nc.close()
    return written


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(schedule=schedules())
def test_running_is_written_at_most_once_and_never_after_the_outcome(natsd: NatsServer, schedule: list[Step]) -> None:
    # Due at once: every yield may find calls to record running, so every interleaving of the
    # sweep, its sender and the outcomes is reachable.
    written = asyncio.run(_run(natsd, schedule, after_s=0.0))

    calls = {f"call-{n}" for kind, n in schedule if kind == "start"}
    assert set(written) == calls
    for states in written.values():
        assert states in (["succeeded"], ["running", "succeeded"]), states


def test_a_call_quicker_than_the_delay_is_written_once() -> None:
    natsd = NatsServer().start()
    try:
        written = asyncio.run(_run(natsd, [("start", 0), ("yield", 3), ("end", 0)], after_s=60.0))
    finally:
        natsd.close()

    assert written == {"call-0": ["succeeded"]}
