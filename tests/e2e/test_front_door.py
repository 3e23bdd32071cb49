"""The async front door end to end: enqueue, dedupe, refuse, look up and cancel."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import uuid
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from nats.aio.client import Client
from nats.aio.msg import Msg

from function.wire.queue_request import decode
from harness.natsd import NatsServer
from harness.servers import RecordingServer, answer, wait_until
from harness.worker import WorkerProcess
from tests.fixtures_io import load_vectors
from tests.support import Queue, WorkerFactory, stream_messages, wait_for_empty

pytestmark = pytest.mark.e2e


def _url(worker: WorkerProcess, path: str) -> str:
    return f"http://127.0.0.1:{worker.port}{path}"


async def _stored(nc: Client, queue: Queue) -> list[bytes]:
    """The messages the stream holds, oldest first (read without consuming)."""
    info = await nc.jetstream().stream_info(queue.stream)
    messages = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        messages.append((await nc.jetstream().get_msg(queue.stream, seq)).data or b"")
    return messages


async def test_enqueue_stores_what_the_gateway_would_and_the_worker_runs_it(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    # The path-and-query vector, sent the way a caller sends it to the gateway.
    vector = next(v for v in load_vectors() if v.name == "path-and-query")
    worker = start_worker(max_inflight="1", call_status_ttl="1m")
    await worker.wait_ready()
    published = await nc.subscribe(queue.subject)  # sees the message as the stream stores it

    async with httpx.AsyncClient() as client:
        answer = await client.post(
            _url(worker, "/async-function/env.openfaas-fn/a/b?q=1&r=two"),
            content=vector.body,
            headers=[("Accept", "*/*"), ("Accept", "text/plain"), ("x-call-id", vector.call_id)],
        )

    assert answer.status_code == 202
    assert answer.headers["X-Call-Id"] == vector.call_id
    stored = (await published.next_msg(timeout=5)).data
    ours, gos = decode(stored), decode(vector.message)
    assert (ours.function, ours.path, ours.query_string, ours.body) == (
        gos.function,
        gos.path,
        gos.query_string,
        gos.body,
    )
    assert ours.header["Accept"] == gos.header["Accept"] == ("*/*", "text/plain")
    assert ours.call_id == vector.call_id  # the header key was canonicalised as Go does
    assert ours.header_value("X-Start-Time") == answer.headers["X-Start-Time"]
    assert ours.invoke_path() == vector.invoke_path


async def test_a_call_queued_through_the_front_door_is_invoked_and_called_back(
    queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    worker = start_worker()
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        answer = await client.post(
            _url(worker, "/async-function/figlet"), content=b"hi", headers={"X-Callback-Url": receiver.url + "/done"}
        )

    assert answer.status_code == 202
    call_id = answer.headers["X-Call-Id"]
    assert uuid.UUID(call_id).version == 4
    [callback] = await receiver.wait_for(1)
    assert callback.header("X-Call-Id") == call_id
    assert callback.header("X-Call-Status") == "succeeded"
    assert gateway.calls[0].path_qs == "/function/figlet/"


async def test_the_same_call_id_twice_is_stored_and_invoked_once(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    worker = start_worker()
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        answers = [
            await client.post(_url(worker, "/async-function/figlet"), content=b"x", headers={"X-Call-Id": "same-1"})
            for _ in range(2)
        ]

    assert [a.status_code for a in answers] == [202, 202]
    await wait_until(lambda: len(gateway.calls) >= 1, 10, "the invocation")
    await wait_for_empty(nc, queue)
    await asyncio.sleep(0.3)
    assert len(gateway.calls) == 1
    info = await nc.jetstream().stream_info(queue.stream)
    assert info.state.last_seq == 1


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({"X-Callback-Url": "http://host:port/x"}, b"x", 400),
        ({}, b"x" * 3000, 413),
    ],
    ids=["unparsable callback url", "over max_request_size"],
)
async def test_bad_requests_are_refused_and_nothing_is_stored(
    nc: Client, queue: Queue, start_worker: WorkerFactory, headers: dict[str, str], body: bytes, status: int
) -> None:
    worker = start_worker(max_request_size="2000")
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        answer = await client.post(_url(worker, "/async-function/figlet"), content=body, headers=headers)

    assert answer.status_code == status
    assert await stream_messages(nc, queue) == 0


async def test_an_unknown_function_gets_404_when_existence_is_checked(
    tmp_path: Path, nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    (tmp_path / "basic-auth-user").write_text("admin\n")
    (tmp_path / "basic-auth-password").write_text("s3cret\n")

    async def system(request: web.Request, body: bytes) -> web.Response:
        authorized = request.headers.get("Authorization") == "Basic " + base64.b64encode(b"admin:s3cret").decode()
        known = request.path == "/system/function/figlet" and request.query.get("namespace") == "openfaas-fn"
        if not (authorized and known):
            return web.Response(status=404, text="not found")
        return web.json_response({"name": "figlet", "namespace": "openfaas-fn", "annotations": {}})

    gateway.system = system
    worker = start_worker(check_function_exists="true", secret_mount_path=str(tmp_path))
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        missing = await client.post(_url(worker, "/async-function/nope.openfaas-fn"), content=b"x")
        known = await client.post(_url(worker, "/async-function/figlet.openfaas-fn"), content=b"x")

    assert (missing.status_code, known.status_code) == (404, 202)
    assert len(gateway.system_calls) == 2


async def test_503_when_the_stream_cannot_be_written(private_natsd: NatsServer, start_worker: WorkerFactory) -> None:
    worker = start_worker(nats_url=private_natsd.url)
    await worker.wait_ready()
    private_natsd.stop()
    await wait_until(lambda: bool(worker.events("Disconnected from NATS")), 10, "disconnect")

    async with httpx.AsyncClient() as client:
        answer = await client.post(_url(worker, "/async-function/figlet"), content=b"x")

    assert answer.status_code == 503


async def test_status_follows_a_call_that_retries(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    answers = itertools.chain([503, 503], itertools.repeat(200))

    async def flaky(request: web.Request, body: bytes) -> web.Response:
        return web.Response(status=next(answers))

    gateway.behaviours["flaky"] = flaky
    worker = start_worker(initial_retry_wait="400ms", max_retry_wait="400ms")
    await worker.wait_ready()
    seen: list[str] = []

    async with httpx.AsyncClient() as client:
        queued = await client.post(_url(worker, "/async-function/flaky"), content=b"x")
        call_id = queued.headers["X-Call-Id"]

        async def state() -> dict[str, object]:
            answer = await client.get(_url(worker, f"/async-function/{call_id}"))
            assert answer.status_code == 200
            status: dict[str, object] = answer.json()
            if not seen or seen[-1] != status["state"]:
                seen.append(str(status["state"]))
            return status

        for _ in range(500):  # poll every 20 ms, 10 s at most
            if (await state())["state"] == "succeeded":
                break
            await asyncio.sleep(0.02)
        final = await state()

        unknown_get = await client.get(_url(worker, "/async-function/no-such-call"))
        unknown_delete = await client.delete(_url(worker, "/async-function/no-such-call"))

    assert seen[-1] == "succeeded"
    assert "waiting" in seen
    assert (final["attempt"], final["status"], final["function"]) == (3, 200, "flaky")
    assert (unknown_get.status_code, unknown_delete.status_code) == (404, 404)


async def test_running_is_recorded_only_for_a_call_that_takes_a_while(
    nc: Client, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    # status.running.RUNNING_AFTER_S is 0.25 s: the slow call runs six times that, the quick one far less.
    gateway.behaviours["slow"] = answer(200, "done", after_s=1.5)
    bucket = f"calls-{uuid.uuid4().hex[:8]}"
    worker = start_worker(call_status_bucket=bucket)
    await worker.wait_ready()
    written: dict[str, list[str]] = {}

    async def record(msg: Msg) -> None:
        status = json.loads(msg.data)
        written.setdefault(status["callId"], []).append(status["state"])

    # Every write to the bucket, not just the latest value, which is all a GET could show.
    watch = await nc.subscribe(f"$KV.{bucket}.>", cb=record)
    async with httpx.AsyncClient() as client:
        ids = [
            (await client.post(_url(worker, f"/async-function/{name}"), content=b"x")).headers["X-Call-Id"]
            for name in ("slow", "figlet")
        ]
        await wait_until(lambda: all(written.get(i, [""])[-1] == "succeeded" for i in ids), 10, "both calls done")
    await watch.unsubscribe()

    assert [written[i] for i in ids] == [["queued", "running", "succeeded"], ["queued", "succeeded"]]


async def test_basic_auth_guards_the_routes_when_configured(
    tmp_path: Path, queue: Queue, start_worker: WorkerFactory
) -> None:
    (tmp_path / "basic-auth-user").write_text("admin")
    (tmp_path / "basic-auth-password").write_text("s3cret")
    worker = start_worker(front_door_basic_auth="true", secret_mount_path=str(tmp_path))
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        anonymous = await client.post(_url(worker, "/async-function/figlet"), content=b"x")
        wrong = await client.post(_url(worker, "/async-function/figlet"), content=b"x", auth=("admin", "nope"))
        right = await client.post(_url(worker, "/async-function/figlet"), content=b"x", auth=("admin", "s3cret"))
        health = await client.get(_url(worker, "/_/health"))

    assert (anonymous.status_code, wrong.status_code, right.status_code) == (401, 401, 202)
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert health.status_code == 200  # probes stay open


async def test_a_functions_retry_annotations_reach_the_worker_through_the_front_door(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    gateway.behaviours["flaky"] = answer(503)
    gateway.annotations["flaky"] = {
        "com.openfaas.retry.attempts": "2",
        "com.openfaas.retry.codes": "503",
        "com.openfaas.scale.max": "5",  # not a retry annotation: not copied
    }
    worker = start_worker(function_cache_ttl="1m")
    await worker.wait_ready()
    published = await nc.subscribe(queue.subject)

    async with httpx.AsyncClient() as client:
        for _ in range(3):
            answered = await client.post(
                _url(worker, "/async-function/flaky"), content=b"x", headers={"X-Callback-Url": receiver.url + "/cb"}
            )
            assert answered.status_code == 202
    stored = [decode((await published.next_msg(timeout=5)).data) for _ in range(3)]
    callbacks = await receiver.wait_for(3)
    await wait_for_empty(nc, queue)

    assert all(
        dict(s.annotations) == {"com.openfaas.retry.attempts": "2", "com.openfaas.retry.codes": "503"} for s in stored
    )
    # Two attempts each, as the annotation says, not the worker's 100.
    assert len(gateway.calls_to("flaky")) == 6
    assert {c.header("X-Retry-Max") for c in callbacks} == {"1"}
    assert len(gateway.system_calls) == 1  # asked once, then remembered


async def test_a_gateway_that_will_not_say_leaves_the_workers_retry_settings(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    gateway.system = answer(401)
    worker = start_worker()
    await worker.wait_ready()

    async with httpx.AsyncClient() as client:
        answers = [(await client.post(_url(worker, "/async-function/figlet"), content=b"x")).status_code for _ in "ab"]
    await gateway.wait_for(2)

    assert answers == [202, 202]
    [warning] = worker.events("Cannot read function annotations; queued with the worker's retry settings")
    assert "wants credentials" in warning["error"]
    assert "basic-auth-user" in warning["hint"]
