"""The queue-worker end to end: invocations, callbacks, retries, bad input, probes and metrics."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from aiohttp import web
from nats.aio.client import Client
from nats.js.api import StreamConfig

from function.status.store import CallStatus
from harness.natsd import NatsServer
from harness.publish import QueueRequest, publish_request
from harness.servers import RecordingServer, answer, wait_until
from tests.support import Queue, WorkerFactory, create_stream, dead_letters, queued, wait_for_empty

pytestmark = pytest.mark.e2e


async def test_n_requests_make_n_invocations_and_n_callbacks(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    count = 40
    worker = start_worker(max_inflight="8")
    await worker.wait_ready()

    for i in range(count):
        request = queued("echo", f"call-{i}", receiver.url + f"/cb/{i}", body=f"body-{i}".encode())
        await publish_request(nc, queue.subject, request)

    await receiver.wait_for(count)
    await wait_for_empty(nc, queue)
    assert len(gateway.calls) == count
    by_path = {call.path_qs: call for call in receiver.calls}
    for i in range(count):
        callback = by_path[f"/cb/{i}"]
        assert callback.body == f"body-{i}".encode()
        assert callback.header("X-Call-Id") == f"call-{i}"
        assert callback.header("X-Function-Status") == "200"
        assert callback.header("X-Function-Name") == "echo"
        assert callback.header("X-Retry") == "0"
        assert callback.header("X-Retry-Max") == "99"
        assert (callback.header("User-Agent") or "").startswith("queue-worker/")
        assert float(callback.header("X-Duration-Seconds") or "x") >= 0
        assert callback.header("X-Echo") == "yes"  # the function's own response header
    # Every invocation went through the gateway's /function/ route with the stored headers.
    assert all(c.path_qs == "/function/echo/" and c.header("Content-Type") == "text/plain" for c in gateway.calls)

    metrics = (await worker.get("/metrics", metrics=True)).text
    assert f'queue_worker_messages_processed_total{{queue_name="{queue.subject}"}} {count}.0' in metrics
    assert (
        f'queue_worker_function_invocations_total{{code="200",function_name="echo.openfaas-fn",'
        f'queue_name="{queue.subject}"}} {count}.0' in metrics
    )
    assert f'queue_worker_callbacks_total{{queue_name="{queue.subject}",result="ok"}} {count}.0' in metrics


async def test_503_three_times_then_200_makes_four_calls_spaced_by_the_back_off(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    answers = iter([503, 503, 503, 200])

    async def flaky(request: web.Request, body: bytes) -> web.Response:
        return web.Response(status=next(answers), body=b"done")

    gateway.behaviours["flaky"] = flaky
    worker = start_worker(initial_retry_wait="100ms", max_retry_wait="1s")
    await worker.wait_ready()

    await publish_request(nc, queue.subject, queued("flaky", "retry-1", receiver.url + "/cb", body=b"x"))

    [callback] = await receiver.wait_for(1)
    calls = gateway.calls_to("flaky")
    assert len(calls) == 4
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(calls)]
    # Waits of 100, 200 and 400 ms: the server redelivers no earlier than each nak asked.
    assert [gap >= wait for gap, wait in zip(gaps, [0.1, 0.2, 0.4], strict=True)] == [True] * 3, gaps
    assert callback.header("X-Retry") == "3"
    assert callback.header("X-Function-Status") == "200"
    await wait_for_empty(nc, queue)
    assert [e["status"] for e in worker.events("Invoked")] == [503, 503, 503, 200]
    assert [e["delivery"] for e in worker.events("Invoked")] == [1, 2, 3, 4]


async def test_a_status_not_in_the_list_is_called_once_and_reported(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    gateway.behaviours["missing"] = answer(404, "no such thing")
    worker = start_worker()
    await worker.wait_ready()

    await publish_request(nc, queue.subject, queued("missing", "nf-1", receiver.url + "/cb", body=b"x"))

    [callback] = await receiver.wait_for(1)
    await wait_for_empty(nc, queue)
    assert len(gateway.calls_to("missing")) == 1
    assert callback.header("X-Function-Status") == "404"
    assert callback.body == b"no such thing"
    assert callback.header("X-Retry") == "0"


async def test_attempts_run_out_and_the_last_failure_is_posted(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    gateway.behaviours["down"] = answer(500, "broken")
    worker = start_worker(max_retry_attempts="3")
    await worker.wait_ready()

    await publish_request(nc, queue.subject, queued("down", "ex-1", receiver.url + "/cb", body=b"x"))

    [callback] = await receiver.wait_for(1)
    await wait_for_empty(nc, queue)
    assert len(gateway.calls_to("down")) == 3
    assert (callback.header("X-Retry"), callback.header("X-Retry-Max")) == ("2", "2")
    assert callback.header("X-Function-Status") == "500"
    assert worker.events("Retries exhausted")


async def test_malformed_messages_and_a_dead_callback_do_not_hold_up_the_rest(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    await create_stream(nc, queue)
    js = nc.jetstream()
    good = [queued("echo", f"good-{i}", receiver.url + f"/cb/{i}") for i in range(5)]
    poison = [b"not json", b"[1,2]", b'{"Function":""}', b'{"Function":"f","Body":"@@@"}', b""]
    dead_callback = queued("echo", "dead-cb", "http://127.0.0.1:1/unreachable", body=b"lost")
    for request, bad in zip(good, poison, strict=True):
        await publish_request(nc, queue.subject, request)
        await js.publish(queue.subject, bad)
    await publish_request(nc, queue.subject, dead_callback)

    worker = start_worker(callback_retry_attempts="1")
    await worker.wait_ready()

    await receiver.wait_for(len(good))
    await wait_for_empty(nc, queue)
    assert sorted(c.path_qs for c in receiver.calls) == [f"/cb/{i}" for i in range(5)]
    assert len(gateway.calls) == len(good) + 1
    rejected = worker.events("Cannot decode message")
    assert sorted(e["reason"] for e in rejected) == ["base64", "function", "json", "json", "type"]
    await wait_until(lambda: bool(worker.events("Callback failed")), 5, "callback failure logged")
    assert worker.events("Callback failed")[0]["callId"] == "dead-cb"
    letters = await dead_letters(nc, queue)
    assert sorted(letter.reason for letter in letters) == ["callback"] + ["undecodable"] * 5
    assert (await worker.get("/_/ready")).status_code == 200
    assert (await worker.get("/_/health")).status_code == 200


async def test_logs_hold_no_body_or_authorization_unless_debug(
    nc: Client, queue: Queue, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    worker = start_worker()
    await worker.wait_ready()
    request = QueueRequest(
        function="echo",
        body=b"secret-payload",
        header={"Authorization": ("Bearer hunter2",), "X-Call-Id": ("log-1",)},
    )
    await publish_request(nc, queue.subject, request)
    await wait_for_empty(nc, queue)

    text = worker.log_text()
    assert "hunter2" not in text
    assert "secret-payload" not in text
    invoked = worker.events("Invoked")[0]
    assert (invoked["callId"], invoked["function"], invoked["delivery"], invoked["status"]) == ("log-1", "echo", 1, 200)
    assert invoked["bytes"] == len(b"secret-payload")  # the echo's answer: counted, never shown
    assert all(isinstance(json.loads(line), dict) for line in text.splitlines() if line.strip())


async def test_readiness_follows_the_connection_and_the_worker_reconnects(
    private_natsd: NatsServer, start_worker: WorkerFactory
) -> None:
    worker = start_worker(nats_url=private_natsd.url)
    await worker.wait_ready()

    private_natsd.stop()
    await wait_until(lambda: bool(worker.events("Disconnected from NATS")), 10, "disconnect logged")
    assert (await worker.get("/_/ready")).status_code == 503
    assert (await worker.get("/_/health")).status_code == 200

    private_natsd.start()
    await wait_until(lambda: bool(worker.events("Reconnected to NATS")), 15, "reconnect logged")
    await worker.wait_ready()
    metrics = (await worker.get("/metrics", metrics=True)).text
    reconnects = [line for line in metrics.splitlines() if line.startswith("queue_worker_nats_reconnect_total")]
    assert [line.split()[-1] for line in reconnects] == ["1.0"]


async def test_callbacks_go_only_where_the_allowlist_says_and_redirects_are_not_followed(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    elsewhere = await RecordingServer().start()
    try:

        async def redirect(request: web.Request, body: bytes) -> web.Response:
            return web.Response(status=302, headers={"Location": elsewhere.url + "/stolen"})

        receiver.behaviours["redirect"] = redirect
        worker = start_worker(callback_allowlist=f"127.0.0.1:{receiver.port}")
        await worker.wait_ready()
        for request in (
            queued("echo", "allowed-1", receiver.url + "/done"),
            queued("echo", "refused-1", elsewhere.url + "/done"),
            queued("echo", "metadata-1", "http://169.254.169.254/latest/meta-data"),
            queued("echo", "redirected-1", receiver.url + "/function/redirect"),
        ):
            await publish_request(nc, queue.subject, request)

        await wait_for_empty(nc, queue)
        letters = {letter.detail["callId"]: letter for letter in await dead_letters(nc, queue)}
        assert set(letters) == {"refused-1", "metadata-1"}
        assert all(letter.reason == "callback_refused" for letter in letters.values())
        # Refused calls were never invoked, and nothing reached the other host, not even by redirect.
        assert sorted(c.header("X-Call-Id") for c in gateway.calls) == ["allowed-1", "redirected-1"]
        assert elsewhere.calls == []
        assert len(receiver.calls) == 2
        assert {e["callId"] for e in worker.events("Callback refused")} == {"refused-1", "metadata-1"}
    finally:
        await elsewhere.close()


async def test_a_bucket_that_cannot_be_made_yet_keeps_the_worker_waiting_not_exiting(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    # A real refusal: a stream that already takes the bucket's subjects (as a JetStream cluster
    # refuses a bucket until its peers are up). The worker waits, not ready, and retries.
    bucket = f"calls-{queue.durable}"
    blocker = f"blocker-{queue.durable}"
    await nc.jetstream().add_stream(StreamConfig(name=blocker, subjects=[f"$KV.{bucket}.>"]))
    worker = start_worker(call_status_bucket=bucket)
    await wait_until(lambda: bool(worker.events("Function not ready")), 20, "the refusal logged")
    assert worker.process is not None
    assert worker.process.poll() is None
    assert (await worker.get("/_/ready")).status_code == 503
    [refused] = worker.events("Function not ready")[:1]
    assert bucket in refused["error"]
    assert refused["retryIn"] > 0

    await nc.jetstream().delete_stream(blocker)

    await worker.wait_ready()
    await publish_request(nc, queue.subject, queued("echo", "after-the-wait"))
    await wait_until(lambda: len(gateway.calls_to("echo")) == 1, 20, "the call")
    store = CallStatus(bucket, ttl_s=60)
    for _ in range(200):  # the status is written after the call, without waiting for the server
        if (found := await store.read(nc, "after-the-wait")) is not None:
            break
        await asyncio.sleep(0.05)
    assert found is not None
    assert found["state"] == "succeeded"
