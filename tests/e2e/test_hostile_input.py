"""Hostile and careless input, end to end (real nats-server, real HTTP servers, worker processes):
every message settles within a bounded number of deliveries, the gateway never sees a path
outside ``/function/<name>``, and credentials reach neither a function nor the log."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from nats.aio.client import Client

from harness.natsd import NatsServer
from harness.publish import QueueRequest, publish_request
from harness.servers import RecordingServer, wait_until
from tests.support import Queue, WorkerFactory, create_stream, dead_letters, wait_for_empty

pytestmark = pytest.mark.e2e

PROBE = Path(__file__).parent / "handlers" / "probe"
SECRET = "s3cret-Do-Not-Log"


async def test_a_handler_that_always_raises_is_dead_lettered_after_handler_error_attempts(
    nc: Client, queue: Queue, start_worker: WorkerFactory
) -> None:
    await create_stream(nc, queue)
    worker = start_worker(handler_dir=PROBE, handler_error_attempts="3")
    await worker.wait_ready()

    await nc.jetstream().publish(queue.subject, b"always boom")

    await wait_for_empty(nc, queue, timeout_s=20)  # deliveries at 0 s, 1 s and 3 s
    [letter] = await dead_letters(nc, queue)
    assert letter.reason == "handler_error"
    assert letter.attempts == 3
    assert letter.detail["deliveries"] == 3
    assert letter.detail["error"] == "RuntimeError: boom on every delivery"
    assert len(worker.events("Handler failed")) == 3


def _raw(function: str, **fields: object) -> bytes:
    return json.dumps({"Function": function, "Body": base64.b64encode(b"x").decode(), **fields}).encode()


#: Each message, and the dead-letter reason it must end with (None: invoked and acked).
HOSTILE: list[tuple[bytes, str | None]] = [
    # Callback URLs Go accepts and Python's urllib does not.
    (_raw("f", Header={"X-Call-Id": ["port"]}, CallbackUrl="http://receiver:99999/cb"), "callback_refused"),
    (_raw("f", Header={"X-Call-Id": ["brackets"]}, CallbackUrl="http://[receiver]/cb"), "callback_refused"),
    (_raw("f", Header={"X-Call-Id": ["v6"]}, CallbackUrl={"Scheme": "http", "Host": "[::1"}), "callback_refused"),
    (_raw("f", Header={"X-Call-Id": ["host"]}, CallbackUrl={"Scheme": "http", "Host": "a b:80"}), "callback_refused"),
    (_raw("f", Header={"X-Call-Id": ["more"]}, CallbackUrl={"Scheme": "http", "Host": "x.y@z"}), "callback_refused"),
    (_raw("f", Header={"X-Call-Id": ["ali"]}, CallbackUrl="http://100.100.100.200/meta"), "callback_refused"),
    # Nested past the recursion limit.
    (b'{"Function":"f","Header":' * 20_000, "undecodable"),
    (b"[" * 200_000, "undecodable"),
    # Paths out of /function/.
    (_raw("..", Path="/system/functions"), "invalid_request"),
    (_raw("f", Path="/../../system/functions"), "invalid_request"),
    (_raw("f", Path="/%2e%2e/%2E%2E/system/functions"), "invalid_request"),
    (_raw("f", Path="/%252e%252e/system/functions"), "invalid_request"),
    (_raw("f", Path="system/functions"), "invalid_request"),
    (_raw("system/functions"), "invalid_request"),
    # Numbers in Unicode digits: read as absent, never raised on.
    (_raw("f", Header={"X-Call-Id": ["digits"], "X-Start-Time": ["\u00b2\u00b3"]}), None),
    (_raw("retry-after", Header={"X-Call-Id": ["retry-after"]}), None),
]


async def test_hostile_messages_settle_and_never_leave_function(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    answers = iter([web.Response(status=429, headers={"Retry-After": "\u0663"}), web.Response(text="ok")])

    async def unicode_retry_after(request: web.Request, body: bytes) -> web.Response:
        return next(answers)

    gateway.behaviours["retry-after"] = unicode_retry_after
    await create_stream(nc, queue)
    worker = start_worker(handler_error_attempts="2", max_request_headers="1000")
    await worker.wait_ready()

    for message, _ in HOSTILE:
        await nc.jetstream().publish(queue.subject, message)

    await wait_for_empty(nc, queue, timeout_s=20)
    letters = await dead_letters(nc, queue)
    assert sorted(letter.reason for letter in letters) == sorted(r for _, r in HOSTILE if r is not None)
    assert all(letter.attempts == 1 for letter in letters)  # decided on the first delivery
    assert all(call.path_qs.startswith(("/function/f/", "/function/retry-after/")) for call in gateway.calls)
    assert [call.path_qs for call in gateway.calls_to("retry-after")] == ["/function/retry-after/"] * 2
    assert worker.events("Handler failed") == []


async def test_the_front_door_credentials_reach_neither_the_function_nor_the_log(
    tmp_path: Path, nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    (tmp_path / "basic-auth-user").write_text("admin")
    (tmp_path / "basic-auth-password").write_text(SECRET)
    worker = start_worker(front_door_basic_auth="true", secret_mount_path=str(tmp_path))
    await worker.wait_ready()
    base = f"http://127.0.0.1:{worker.port}"

    async with httpx.AsyncClient() as client:
        accepted = await client.post(f"{base}/async-function/f", content=b"x", auth=("admin", SECRET))
    await wait_until(lambda: len(gateway.calls) == 1, 10, "the call")
    # A malformed request carrying the credentials: aiohttp's report of it quotes the line.
    authorization = b"Basic " + base64.b64encode(f"admin:{SECRET}".encode())
    reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
    writer.write(b"POST /async-function/f HTTP/1.1\r\nHost: x\r\nAuthorization: " + authorization + b"\x01\r\n\r\n")
    malformed = await reader.readline()
    writer.close()
    await asyncio.sleep(0.2)  # the error report is written after the answer

    assert accepted.status_code == 202
    assert gateway.calls[0].header("Authorization") is None
    assert malformed.startswith(b"HTTP/1.")
    assert b" 400 " in malformed
    log = worker.log_text()
    assert "Bad HTTP request" in log
    assert SECRET not in log
    assert authorization.decode() not in log


async def test_a_call_at_exactly_the_header_limit_is_run_and_one_over_is_refused_with_its_status(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    ours = {f"X-H{i}": "v" for i in range(4)}
    async with httpx.AsyncClient() as client:
        # What httpx sends, plus the X-Call-Id and X-Start-Time the door adds: exactly the limit.
        limit = len(client.build_request("POST", "http://h/", content=b"x", headers=ours).headers) + 2
        worker = start_worker(max_request_headers=str(limit))
        await worker.wait_ready()
        base = f"http://127.0.0.1:{worker.port}"
        at_limit = await client.post(f"{base}/async-function/f", content=b"x", headers=ours)
        over = await client.post(f"{base}/async-function/f", content=b"x", headers={**ours, "X-One-More": "v"})
        await wait_until(lambda: len(gateway.calls) == 1, 10, "the call at the limit")

        # Straight into the stream, a request over the limit is dead-lettered, and its status says so.
        header = {"X-Call-Id": ("over-the-limit",), **{f"X-P{i}": ("v",) for i in range(limit)}}
        await publish_request(nc, queue.subject, QueueRequest(function="f", header=header))
        await wait_for_empty(nc, queue)
        await asyncio.sleep(0.2)  # status writes are not waited for
        status = (await client.get(f"{base}/async-function/over-the-limit")).json()

    assert (at_limit.status_code, over.status_code) == (202, 431)
    assert [letter.reason for letter in await dead_letters(nc, queue)] == ["limits"]
    assert (status["state"], status["reason"]) == ("dead-lettered", "limits")


async def test_a_callback_that_can_never_be_delivered_is_refused_at_the_door(
    queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    worker = start_worker()
    await worker.wait_ready()
    base = f"http://127.0.0.1:{worker.port}"

    async with httpx.AsyncClient() as client:
        answers = [
            await client.post(f"{base}/async-function/f", content=b"x", headers={"X-Callback-Url": url})
            for url in ("http://169.254.169.254/", "http://100.100.100.200/", "ftp://r/", "http://r:70000/")
        ]

    assert [a.status_code for a in answers] == [400] * 4
    assert "metadata" in answers[0].text
    assert "http or https" in answers[2].text
    assert gateway.calls == []


@pytest.mark.parametrize("name", ["..", ".", "%2e%2e", "%2E."])
async def test_the_front_door_refuses_dot_names(name: str, natsd: NatsServer, start_worker: WorkerFactory) -> None:
    worker = start_worker()
    await worker.wait_ready()

    reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
    writer.write(f"POST /async-function/{name} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
    status_line = await reader.readline()
    writer.close()

    assert status_line.split()[1] == b"400"


@pytest.mark.parametrize(
    "head",
    [
        b"POST /async-function/f HTTP/1.1\r\nX-Call-Id: \xff\xfe\r\n",
        b"GET /async-function/\xff\xfe HTTP/1.1\r\n",
        b"DELETE /async-function/\xc3 HTTP/1.1\r\n",
    ],
)
async def test_a_call_id_that_is_not_utf_8_is_a_400_never_a_500(head: bytes, start_worker: WorkerFactory) -> None:
    worker = start_worker()
    await worker.wait_ready()

    reader, writer = await asyncio.open_connection("127.0.0.1", worker.port)
    writer.write(head + b"Host: x\r\nContent-Length: 0\r\n\r\n")
    status_line = await reader.readline()
    writer.close()

    assert status_line.split()[1] == b"400"
    assert (await worker.get("/_/ready")).status_code == 200
