"""The transport's request encoding and response framing, with no sockets: the conformance
suite that llhttp, under :class:`ResponseParser`, must pass."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from function.transport import InvalidRequest, ProtocolError, Response, headers
from function.transport.headers import MAX_KNOWN_TOKENS, TOKEN, UNSAFE_VALUE, sendable
from function.transport.http import (
    MAX_SPARE_PARSERS,
    Parsed,
    Parsers,
    ResponseParser,
    _Connection,
    encode_head,
)


def _feed_in_pieces(raw: bytes, cuts: list[int], method: str = "POST") -> list[Parsed]:
    parser = ResponseParser()
    parser.expect(method)
    responses = []
    edges = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    for start, end in itertools.pairwise(edges):
        response = parser.feed(raw[start:end])
        if response is not None:
            responses.append(response)
            parser.expect(method)
    return responses


def _chunked(body: bytes, sizes: list[int]) -> bytes:
    out, at = [], 0
    for size in sizes:
        piece = body[at : at + size]
        if not piece:
            break
        out.append(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
        at += len(piece)
    if at < len(body):
        out.append(b"%X\r\n%s\r\n" % (len(body) - at, body[at:]))
    return b"".join(out) + b"0\r\nX-Trailer: yes\r\n\r\n"


@given(body=st.binary(max_size=300), cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_a_content_length_response_reads_the_same_however_the_bytes_arrive(body: bytes, cuts: list[int]) -> None:
    raw = b"HTTP/1.1 201 Created\r\nX-Call-Status: ok\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)

    [response] = _feed_in_pieces(raw, cuts)

    assert response == Parsed(Response(201, (("X-Call-Status", "ok"), ("Content-Length", str(len(body)))), body), True)


@given(
    body=st.binary(max_size=300),
    sizes=st.lists(st.integers(min_value=1, max_value=64), max_size=6),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
def test_a_chunked_body_is_reassembled_however_it_was_cut(body: bytes, sizes: list[int], cuts: list[int]) -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(body, sizes)

    [response] = _feed_in_pieces(raw, cuts)

    assert (response.response.body, response.keep_alive) == (body, True)


def test_two_responses_in_turn_on_one_connection() -> None:
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    second = b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n"

    responses = _feed_in_pieces(first + second, [len(first)])

    assert [(r.response.status, r.response.body) for r in responses] == [(200, b"hi"), (500, b"bad")]


def test_interim_responses_are_skipped() -> None:
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )

    [response] = _feed_in_pieces(raw, [])

    assert (response.response.status, response.response.headers) == (200, (("Content-Length", "0"),))


@pytest.mark.parametrize(
    ("method", "status", "keep_alive"),
    [("HEAD", 200, False), ("GET", 204, True), ("GET", 304, True)],
    ids=["HEAD", "204", "304"],
)
def test_responses_that_never_have_a_body(method: str, status: int, keep_alive: bool) -> None:
    raw = b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status

    [parsed] = _feed_in_pieces(raw, [], method=method)

    # After HEAD, llhttp still expects the announced body: that connection is not reused.
    assert (parsed.response.status, parsed.response.body, parsed.keep_alive) == (status, b"", keep_alive)


def test_a_body_without_length_ends_with_the_connection() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\n\r\npart one, ") is None
    assert parser.feed(b"part two") is None

    parsed = parser.feed_eof()

    assert (parsed.response.body, parsed.keep_alive) == (b"part one, part two", False)


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close", False),
        (b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close", False),
        (b"HTTP/1.0 200 OK", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip", False),
    ],
)
def test_when_a_connection_may_carry_another_request(head: bytes, keep_alive: bool) -> None:
    parser = ResponseParser()
    framing = b"" if b"Transfer-Encoding" in head else b"\r\nContent-Length: 0"
    response = parser.feed(head + framing + b"\r\n\r\n") or parser.feed_eof()

    assert response.keep_alive is keep_alive


def test_bytes_beyond_the_response_make_the_connection_unusable() -> None:
    parsed = ResponseParser().feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab")

    assert parsed is not None
    assert (parsed.response.body, parsed.keep_alive) == (b"a", False)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\na\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+1\r\na\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\na\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: " + b"a" * (70 * 1024),
        # RFC 9112 section 6.3: both framings at once is an error, never a reusable connection.
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nab",
    ],
)
def test_malformed_responses_are_protocol_errors(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        ResponseParser().feed(raw)


def test_a_connection_closed_mid_body_is_a_protocol_error() -> None:
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc") is None

    with pytest.raises(ProtocolError):
        parser.feed_eof()


def test_a_request_is_framed_with_host_first_and_its_length() -> None:
    head = encode_head("POST", "/function/f/?a=1", "gw:8080", [("X-A", "1"), ("X-A", "2")], b"body")

    assert head == b"POST /function/f/?a=1 HTTP/1.1\r\nHost: gw:8080\r\nX-A: 1\r\nX-A: 2\r\nContent-Length: 4\r\n\r\n"


def test_text_beyond_ascii_goes_as_the_utf_8_it_arrived_as() -> None:
    assert b"X-A: snow \xe2\x98\x83, caf\xc3\xa9\r\n" in encode_head(
        "GET", "/f", "gw", [("X-A", "snow \u2603, caf\u00e9")], b""
    )


def test_a_get_without_a_body_carries_no_length() -> None:
    assert encode_head("GET", "/f", "gw", [], b"") == b"GET /f HTTP/1.1\r\nHost: gw\r\n\r\n"
    assert b"Content-Length: 0" in encode_head("POST", "/f", "gw", [], b"")


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        ("POST", "/f", [("X-A", "1\r\nX-Injected: yes")]),
        ("POST", "/f", [("X-A", "1\nX")]),
        ("POST", "/f", [("X-A", "nul\x00")]),
        ("POST", "/f", [("X A", "1")]),
        ("POST", "/f", [("X-A:", "1")]),
        ("POST", "/f", [("X-A", "lone \ud800")]),
        ("POST", "/f HTTP/1.1\r\nX: y", []),
        ("PO ST", "/f", []),
    ],
)
def test_what_would_change_the_requests_meaning_is_refused(
    method: str, target: str, headers: list[tuple[str, str]]
) -> None:
    with pytest.raises(InvalidRequest):
        encode_head(method, target, "gw", headers, b"")


#: Field names and values as callers may store them: mostly tokens and printable text, with
#: every character that matters to the patterns mixed in.
_FIELD_TEXT = st.text(
    st.one_of(st.sampled_from("-_.!#~Aaz09 :\t\r\n\x00\x7f\u00e9\u2028\u2603\ud800"), st.characters()),
    max_size=12,
)


@given(st.lists(st.tuples(_FIELD_TEXT, _FIELD_TEXT), max_size=MAX_KNOWN_TOKENS + 50))
def test_a_field_is_sendable_exactly_when_the_patterns_say_so_whatever_was_seen_before(
    fields: list[tuple[str, str]],
) -> None:
    # Run twice: the second time every valid name is remembered (or forgotten, past the bound).
    for name, value in [*fields, *fields]:
        expected = TOKEN.fullmatch(name) is not None and UNSAFE_VALUE.search(value) is None
        assert sendable(name, value) is expected, (name, value)


def test_names_callers_invent_are_remembered_up_to_a_bound() -> None:
    for i in range(3 * MAX_KNOWN_TOKENS):
        assert sendable(f"X-Invented-{i}", "1")
        assert len(headers._TOKENS) <= MAX_KNOWN_TOKENS
    assert sendable("X-Invented-0", "1")
    assert "X-Invented-0" in headers._TOKENS


# Connections lend parsers from one pool only while a response arrives: whatever the order in
# which the bytes of several connections' responses arrive, each reads exactly what a parser of
# its own would.

#: What a server may answer, well framed or not.
ANSWERS = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
    b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbusy",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200",
    b"HTTP/1.1 2x0 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ncut",
)


class _Wire(asyncio.Transport):
    """The socket under a connection: the buffers written are kept as given; closing is
    remembered."""

    def __init__(self) -> None:
        super().__init__()
        self.shut = False
        self.buffers: list[bytes | bytearray | memoryview] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.buffers.append(data)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        self.buffers.extend(list_of_data)

    def close(self) -> None:
        self.shut = True


def _pieces(raw: bytes, cuts: list[int]) -> list[bytes]:
    edges = sorted({0, len(raw), *(c % (len(raw) + 1) for c in cuts)})
    return [raw[start:end] for start, end in itertools.pairwise(edges)]


def _alone(pieces: list[bytes], method: str) -> tuple[str, object]:
    """What a parser of its own makes of a response, the connection closing after it."""
    parser = ResponseParser()
    parser.expect(method)
    try:
        for piece in pieces:
            parsed = parser.feed(piece)
            if parsed is not None:
                return "answer", parsed
        return "answer", parser.feed_eof()
    except ProtocolError:
        return "error", ProtocolError


exchanges = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=2),  # which connection
        st.sampled_from(range(len(ANSWERS))),
        st.sampled_from(["POST", "GET", "HEAD"]),
        st.lists(st.integers(min_value=0), max_size=4),  # where the bytes are cut
    ),
    min_size=1,
    max_size=12,
)


class _Exchanges:
    """Connections sharing one pool of parsers, each given its exchanges in turn, the bytes of
    one connection's answer arriving between those of another's."""

    def __init__(self, exchanges: list[tuple[int, int, str, list[int]]]) -> None:
        self.parsers = Parsers()
        self.connections: dict[int, _Connection] = {}
        self.queues: dict[int, list[tuple[str, list[bytes]]]] = {}
        for slot, answer, method, cuts in exchanges:
            self.queues.setdefault(slot, []).append((method, _pieces(ANSWERS[answer], cuts)))
        self.under_way: dict[int, tuple[asyncio.Future[Parsed], str, list[bytes], list[bytes]]] = {}

    @property
    def done(self) -> bool:
        return not self.under_way and not any(self.queues.values())

    def step(self, slot: int) -> None:
        """The next thing on connection ``slot``: a request sent, a piece of its answer, or
        the server closing after the last piece."""
        if slot not in self.under_way and not self._send(slot):
            return
        future, method, pieces, left = self.under_way[slot]
        connection = self.connections[slot]
        if left:
            connection.data_received(left.pop(0))
        elif not future.done():
            connection.connection_lost(None)
        if future.done():
            del self.under_way[slot]
            self._check(connection, future, _alone(pieces, method))

    def _send(self, slot: int) -> bool:
        if not self.queues.get(slot):
            return False
        method, pieces = self.queues[slot].pop(0)
        connection = self.connections.get(slot)
        if connection is None or connection.closed:
            connection = self.connections[slot] = _Connection(self.parsers)
            connection.connection_made(_Wire())
        self.under_way[slot] = (connection.send(method, b"request", b""), method, pieces, list(pieces))
        return True

    def _check(self, connection: _Connection, future: asyncio.Future[Parsed], alone: tuple[str, object]) -> None:
        error = future.exception()
        if error is not None:
            assert alone == ("error", type(error))
            connection.close()
            return
        parsed = future.result()
        assert ("answer", parsed) == alone
        if parsed.keep_alive:
            assert connection.parser is None  # given back once the answer is whole
        else:
            connection.close()
        assert self.parsers.spare <= MAX_SPARE_PARSERS


@given(exchanges=exchanges, order=st.lists(st.integers(min_value=0, max_value=2), max_size=60))
def test_connections_sharing_parsers_read_each_answer_as_a_parser_of_their_own(
    exchanges: list[tuple[int, int, str, list[int]]], order: list[int]
) -> None:
    async def scenario() -> None:
        run = _Exchanges(exchanges)
        for slot in order:
            run.step(slot)
        while not run.done:
            for slot in range(3):
                run.step(slot)

    asyncio.run(scenario())


def test_requests_waiting_for_an_answer_hold_no_parser_and_answers_in_turn_share_one() -> None:
    async def scenario() -> None:
        parsers = Parsers()
        connections = [_Connection(parsers) for _ in range(100)]
        for connection in connections:
            connection.connection_made(_Wire())
        futures = [connection.send("POST", b"request", b"body") for connection in connections]

        assert [connection.parser for connection in connections] == [None] * 100

        for connection in connections:
            connection.data_received(ANSWERS[0])

        assert all(future.result().response.status == 200 for future in futures)
        assert [connection.parser for connection in connections] == [None] * 100
        assert parsers.spare == 1

    asyncio.run(scenario())


def test_a_body_goes_to_the_socket_as_it_is_after_its_head_never_copied_beside_it() -> None:
    async def scenario() -> None:
        wire = _Wire()
        connection = _Connection(Parsers())
        connection.connection_made(wire)
        body = bytes(256 * 1024)

        connection.send("POST", b"POST / HTTP/1.1\r\n\r\n", body)
        connection.send("GET", b"GET / HTTP/1.1\r\n\r\n", b"")

        assert wire.buffers == [b"POST / HTTP/1.1\r\n\r\n", body, b"GET / HTTP/1.1\r\n\r\n"]
        assert wire.buffers[1] is body

    asyncio.run(scenario())
