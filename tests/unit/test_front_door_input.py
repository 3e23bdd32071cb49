"""The front door's reading of a request: whatever arrives, a 202-able request that can only
invoke ``/function/<valid name>``, or a 4xx naming why; never a 5xx for bad input."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import structlog
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from function.front_door import FrontDoor, GatewayUnavailable, Refused, function_info, queued_request
from function.settings import WorkerSettings
from function.status.cancellations import Cancellations
from function.status.store import CallStatus
from function.wire.queue_request import QueueRequest
from harness.ports import free_port
from runtime import Context, Settings
from tests.unit.test_wire_properties import _assert_confined, pathish

SETTINGS = WorkerSettings.from_env({"max_request_headers": "5"})
names = st.lists(st.sampled_from([*"ab.-_%/2eE\\", ".."]), min_size=1, max_size=8).map("".join)
header_names = st.sampled_from(["X-Call-Id", "x-call-id", "X-Callback-Url", "Authorization", "X-A", "Content-Type"])
header_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30
) | st.sampled_from(
    [
        "http://169.254.169.254/",
        "http://100.100.100.200/latest",
        "http://[::ffff:a9fe:a9fe]/",
        "http://h:99999/",
        "http://[h]/",
        "gopher://h/",
        "http://receiver:8080/cb",
        "\udcff\udcfe",
    ]
)


@settings(max_examples=400)
@given(
    name=names,
    path=pathish,
    headers=st.lists(st.tuples(header_names, header_values), max_size=6),
)
def test_every_request_is_refused_with_a_4xx_or_confined_to_its_function(
    name: str, path: str, headers: list[tuple[str, str]]
) -> None:
    queued: QueueRequest | Refused
    try:
        queued = queued_request(
            name=name,
            path="/" + path if path else "",
            method="POST",
            query="",
            headers=headers,
            host="gw",
            settings=SETTINGS,
        )
    except Refused as exc:
        queued = exc
    if isinstance(queued, Refused):
        assert queued.status in (400, 431)
        return
    _assert_confined(queued)
    assert re.fullmatch(r"[!-~]{1,256}", queued.call_id)
    assert sum(len(v) for v in queued.header.values()) <= 5  # counted as stored


def test_the_door_keeps_the_credentials_it_checked() -> None:
    guarded = replace(SETTINGS, front_door_credentials=("a", "b"))
    headers = [("Authorization", "Basic YTpi"), ("X-A", "1")]

    kept = queued_request(name="f", path="", method="POST", query="", headers=headers, host="gw", settings=SETTINGS)
    stripped = queued_request(name="f", path="", method="POST", query="", headers=headers, host="gw", settings=guarded)

    assert kept.header_value("Authorization") == "Basic YTpi"
    assert stripped.header_value("Authorization") == ""
    assert stripped.header_value("X-A") == "1"


def test_a_request_at_exactly_the_header_limit_is_accepted_as_the_worker_counts_it() -> None:
    three = [("X-A", "1"), ("X-B", "2"), ("X-C", "3")]

    queued = queued_request(name="f", path="", method="POST", query="", headers=three, host="gw", settings=SETTINGS)

    assert sum(len(v) for v in queued.header.values()) == 5  # with X-Call-Id and X-Start-Time
    assert SETTINGS.limits.header_problem(queued.header) is None
    with pytest.raises(Refused) as refused:
        queued_request(
            name="f", path="", method="POST", query="", headers=[*three, ("X-D", "4")], host="gw", settings=SETTINGS
        )
    assert refused.value.status == 431


async def _never_withdrawn(call_id: str, seq: int, attempts: int, context: Context) -> None:
    return None


@pytest.fixture
async def door() -> AsyncIterator[int]:
    """The front door over real HTTP, with no NATS: what passes its checks gets a 503."""
    context = Context(Settings.from_env({"queue_name": "faas-request"}), structlog.get_logger(), CollectorRegistry())
    front = FrontDoor(
        settings=WorkerSettings.from_env({"queue_name": "faas-request"}),
        context=context,
        status=CallStatus("calls", 60),
        cancellations=Cancellations("calls-cancelled", 60),
        functions=None,
        withdraw=_never_withdrawn,
    )
    app = web.Application()
    app.router.add_routes(front.routes())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield port
    await runner.cleanup()


async def _raw(port: int, head: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + b"Host: gw\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    status_line = await reader.readline()
    writer.close()
    return int(status_line.split()[1])


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST /async-function/f HTTP/1.1\r\nX-Call-Id: \xff\xfe\r\n", 400),
        (b"GET /async-function/\xff\xfe HTTP/1.1\r\n", 400),
        (b"DELETE /async-function/\xff HTTP/1.1\r\n", 400),
        (b"POST /async-function/%2e%2e HTTP/1.1\r\n", 400),
        (b"POST /async-function/. HTTP/1.1\r\n", 400),
        (b"POST /async-function/f/%2e%2e/%2e%2e/system/functions HTTP/1.1\r\n", 400),
        (b"POST /async-function/f/%252e%252e/x HTTP/1.1\r\n", 400),
        (b"POST /async-function/f HTTP/1.1\r\nX-Callback-Url: http://100.100.100.200/x\r\n", 400),
        (b"POST /async-function/f HTTP/1.1\r\nX-Callback-Url: gopher://h/\r\n", 400),
        (b"POST /async-function/f HTTP/1.1\r\nX-Callback-Url: http://h:99999/\r\n", 400),
        (b"POST /async-function/f HTTP/1.1\r\n" + b"X-A: 1\r\n" * 100, 431),
        # Passes every check; only the missing NATS connection stops it.
        (b"POST /async-function/f/ok HTTP/1.1\r\nX-Callback-Url: http://receiver:8080/cb\r\n", 503),
    ],
)
async def test_bad_input_over_http_is_a_4xx_never_a_500(door: int, head: bytes, status: int) -> None:
    assert await _raw(door, head) == status


@given(
    st.dictionaries(
        st.one_of(st.sampled_from(["com.openfaas.retry.attempts", "com.openfaas.retry.codes"]), st.text(max_size=20)),
        st.one_of(st.text(max_size=8), st.integers()),
        max_size=6,
    )
)
def test_only_string_retry_annotations_are_taken_from_the_gateways_answer(annotations: dict[str, object]) -> None:
    body = json.dumps({"name": "f", "annotations": annotations}).encode()

    info = function_info(200, body)

    assert info.found
    assert info.retry_annotations == {
        k: v for k, v in annotations.items() if k.startswith("com.openfaas.retry.") and isinstance(v, str)
    }


@given(st.one_of(st.text(max_size=10), st.integers(), st.none()))
def test_a_functions_cap_is_a_positive_whole_number_or_none(value: object) -> None:
    annotations = {} if value is None else {"com.openfaas.queue.max_inflight": value}
    body = json.dumps({"name": "f", "annotations": annotations}).encode()

    cap = function_info(200, body).max_inflight

    text = value.strip() if isinstance(value, str) else ""
    expected = int(text) if text.isascii() and text.isdigit() and 0 < len(text) <= 6 and int(text) > 0 else None
    assert cap == expected


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [(401, b"", "wants credentials"), (500, b"", "status 500"), (200, b"<html>", "not a function's status")],
)
def test_an_answer_that_says_nothing_of_the_function_is_unavailable(status: int, body: bytes, error: str) -> None:
    with pytest.raises(GatewayUnavailable, match=error):
        function_info(status, body)
    assert function_info(404, b"").found is False
