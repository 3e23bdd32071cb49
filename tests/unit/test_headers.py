from __future__ import annotations

from function.callbacks.post import CallbackInfo, callback_headers
from function.invoke import Invocation, request_headers
from function.transport import Response
from function.transport.headers import forwardable
from function.wire.queue_request import QueueRequest


def test_hop_by_hop_host_and_length_are_not_forwarded() -> None:
    headers = [
        ("Connection", "keep-alive, X-Private"),
        ("X-Private", "1"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Host", "gateway:8080"),
        ("Content-Length", "5"),
        ("Content-Type", "text/plain"),
        ("Authorization", "Bearer t"),
    ]

    assert forwardable(headers) == [("Content-Type", "text/plain"), ("Authorization", "Bearer t")]


def test_every_stored_value_of_a_header_is_sent() -> None:
    request = QueueRequest(function="f", header={"Accept": ("*/*", "text/plain"), "Host": ("gw",)})

    assert request_headers(request) == [("Accept", "*/*"), ("Accept", "text/plain")]


def test_the_callback_carries_the_function_headers_and_the_workers_own() -> None:
    result = Invocation(
        Response(
            status=201,
            headers=(
                ("Content-Type", "application/json"),
                ("X-Function-Status", "spoofed"),
                ("Connection", "close"),
                ("User-Agent", "spoofed"),
            ),
            body=b"{}",
        ),
        duration_s=0.5,
    )
    info = CallbackInfo(call_id="c-1", function="f", retries=2, max_retries=9)

    assert callback_headers(result, info) == [
        ("Content-Type", "application/json"),
        ("X-Call-Id", "c-1"),
        ("X-Call-Status", "succeeded"),
        ("X-Function-Status", "201"),
        ("X-Function-Name", "f"),
        ("X-Duration-Seconds", "0.500000"),
        ("X-Retry", "2"),
        ("X-Retry-Max", "9"),
    ]


def test_no_call_id_header_when_the_request_had_none() -> None:
    info = CallbackInfo(call_id="", function="f", retries=0, max_retries=0)

    names = [name for name, _ in callback_headers(Invocation(Response(200), 0.0), info)]

    assert "X-Call-Id" not in names
