"""The call-status buckets' limits on a real nats-server: at most ``call_status_max_calls`` calls
are kept (each costs the server memory), the oldest dropped for the newest; a bucket made
before, or with other settings, is brought to the limits; a worker that may not change them
runs on."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import DiscardPolicy, KeyValueConfig, StorageType, StreamConfig

from function.status.cancellations import Cancellations
from function.status.store import CallStatus, ensure_bucket
from harness.natsd import NatsServer
from harness.publish import publish_request
from harness.servers import RecordingServer, wait_until
from tests.support import Queue, WorkerFactory, queued, wait_for_empty

pytestmark = pytest.mark.e2e


async def _config(nc: Client, bucket: str) -> StreamConfig:
    return (await nc.jetstream().stream_info(f"KV_{bucket}")).config


async def test_a_bucket_keeps_the_newest_max_calls_and_refuses_none(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    bucket = f"calls-{uuid.uuid4().hex[:8]}"
    worker = start_worker(call_status_bucket=bucket, call_status_max_calls="10", max_inflight="1")
    await worker.wait_ready()
    for n in range(30):
        await publish_request(nc, queue.subject, queued("echo", f"call-{n}"))
    await wait_for_empty(nc, queue, timeout_s=30)
    js = nc.jetstream()
    # Every outcome stored (the stream's last sequence counts the writes; a call slow enough to
    # be recorded running on a loaded machine adds one), not one refused as full.
    for _ in range(200):
        state = (await js.stream_info(f"KV_{bucket}")).state
        if state.last_seq >= 30:
            break
        await asyncio.sleep(0.05)
    assert state.last_seq >= 30
    assert state.messages == 10
    store = CallStatus(bucket, ttl_s=60)
    assert await store.read(nc, "call-0") is None
    newest = await store.read(nc, "call-29")
    assert newest is not None
    assert newest["state"] == "succeeded"
    assert not worker.events("Call status not stored")
    for name in (bucket, f"{bucket}-cancelled"):
        config = await _config(nc, name)
        assert (config.max_msgs, config.discard) == (10, DiscardPolicy.OLD)


async def test_a_bucket_made_before_is_brought_to_the_limits_and_keeps_its_values(
    nc: Client, start_worker: WorkerFactory
) -> None:
    bucket = f"calls-{uuid.uuid4().hex[:8]}"
    # As an earlier version made it: nats-py's defaults, no cap, refusing writes when full.
    kv = await nc.jetstream().create_key_value(KeyValueConfig(bucket=bucket, ttl=3600, storage=StorageType.FILE))
    await kv.put("earlier", b"{}")
    assert (await _config(nc, bucket)).discard == DiscardPolicy.NEW

    worker = start_worker(call_status_bucket=bucket, call_status_ttl="10m", call_status_max_calls="50")
    await worker.wait_ready()

    config = await _config(nc, bucket)
    assert (config.max_age, config.max_msgs, config.discard) == (600, 50, DiscardPolicy.OLD)
    assert (await kv.get("earlier")).value == b"{}"
    [changed] = [e for e in worker.events("Key-value bucket limits changed") if e["bucket"] == bucket]
    assert changed["changes"] == {"max_age": 600, "max_msgs": 50, "discard": "old"}


async def test_workers_starting_together_all_make_or_find_the_bucket(natsd: NatsServer) -> None:
    clients = [await nats.connect(natsd.url) for _ in range(16)]
    try:
        for _ in range(10):
            bucket = f"calls-{uuid.uuid4().hex[:8]}"
            # Eight workers starting at once: each may find the bucket missing, just made, or
            # made and already changed by another (then making it is refused).
            await asyncio.gather(*(ensure_bucket(nc, bucket, 60, 1, 25) for nc in clients))
            config = await _config(clients[0], bucket)
            assert (config.max_age, config.max_msgs, config.discard) == (60, 25, DiscardPolicy.OLD)
    finally:
        for nc in clients:
            await nc.close()


async def test_a_worker_that_may_not_change_the_limits_warns_and_keeps_working(
    tmp_path: Path, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    (tmp_path / "nats.conf").write_text(
        "authorization { users: ["
        ' { user: "admin", password: "admin-pass" },'
        ' { user: "qw", password: "qw-pass", permissions: { publish: { deny: ["$JS.API.STREAM.UPDATE.>"] } } }'
        "] }"
    )
    (tmp_path / "nats-user").write_text("qw")
    (tmp_path / "nats-password").write_text("qw-pass")
    natsd = NatsServer(extra_args=("-c", str(tmp_path / "nats.conf"))).start()
    nc = await nats.connect(natsd.url, user="admin", password="admin-pass")
    try:
        bucket = f"calls-{uuid.uuid4().hex[:8]}"
        await nc.jetstream().create_key_value(KeyValueConfig(bucket=bucket, ttl=3600, storage=StorageType.FILE))
        worker = start_worker(
            nats_url=natsd.url,
            nats_auth="userpass",
            secret_mount_path=str(tmp_path),
            call_status_bucket=bucket,
            call_status_max_calls="50",
        )
        await worker.wait_ready(timeout_s=60)
        warned = [e for e in worker.events("Key-value bucket limits not changed") if e["bucket"] == bucket]
        assert len(warned) == 1
        assert warned[0]["wanted"]["max_msgs"] == 50
        assert (await _config(nc, bucket)).max_msgs == -1

        await publish_request(nc, queue.subject, queued("echo", "still-recorded"))
        await wait_until(lambda: len(gateway.calls_to("echo")) == 1, 20, "the call")
        store = CallStatus(bucket, ttl_s=60)
        for _ in range(200):
            if (found := await store.read(nc, "still-recorded")) is not None:
                break
            await asyncio.sleep(0.05)
        assert found is not None
        assert found["state"] == "succeeded"
    finally:
        await nc.close()
        natsd.close()


async def test_the_cancellations_a_worker_follows_are_capped_as_the_bucket_is(natsd: NatsServer) -> None:
    bucket = f"cancelled-{uuid.uuid4().hex[:8]}"
    nc = await nats.connect(natsd.url)
    following = Cancellations(bucket, ttl_s=60, max_calls=5)
    try:
        await following.connect(nc)
        for n in range(12):
            await following.cancel(nc, f"call-{n}")
        await nc.flush()
        await wait_until(lambda: "call-11" in following, 5, "the last cancellation followed")
        assert [f"call-{n}" in following for n in range(12)] == [False] * 7 + [True] * 5
        # A worker starting now loads the same five from the bucket.
        late = Cancellations(bucket, ttl_s=60, max_calls=5)
        await late.connect(nc)
        assert [f"call-{n}" in late for n in range(12)] == [False] * 7 + [True] * 5
        await late.close()
    finally:
        await following.close()
        await nc.close()
