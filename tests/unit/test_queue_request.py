from __future__ import annotations

import base64
import json
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from function.wire.gourl import GoURL, URLError
from function.wire.queue_request import DecodeError, QueueRequest, decode, encode
from function.wire.target import InvalidTarget
from tests.fixtures_io import Vector, load_vectors

VECTORS = load_vectors()


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_every_go_vector_decodes_to_what_go_means(vector: Vector) -> None:
    request = decode(vector.message)

    assert request.function == vector.function
    assert request.body == vector.body
    assert request.invoke_path() == vector.invoke_path
    assert request.callback_url() == vector.callback_url
    assert request.call_id == vector.call_id


@pytest.mark.parametrize("vector", VECTORS, ids=[v.name for v in VECTORS])
def test_encoding_a_decoded_vector_gives_back_the_same_request(vector: Vector) -> None:
    request = decode(vector.message)

    assert decode(encode(request)) == request
    assert json.loads(encode(request)) == json.loads(vector.message)


def test_annotations_labels_and_environment_are_kept() -> None:
    by_name = {v.name: decode(v.message) for v in VECTORS}

    assert by_name["retry-annotations"].annotations["com.openfaas.retry.codes"] == "429,503"
    assert by_name["labels-env"].labels == {"team": "a"}
    assert by_name["labels-env"].environment == {"write_timeout": "5m"}
    assert by_name["labels-env"].queue_name == "slow-fns"
    assert by_name["path-and-query"].header["Accept"] == ("*/*", "text/plain")


def test_null_and_absent_keys_mean_the_same() -> None:
    absent = decode(b'{"Function":"f"}')
    nulls = decode(
        b'{"Function":"f","Header":null,"Host":null,"Body":null,"Method":null,"Path":null,'
        b'"QueryString":null,"QueueName":null,"Annotations":null,"Labels":null,"Environment":null,"CallbackUrl":null}'
    )

    assert absent == nulls == QueueRequest(function="f")


def test_the_older_encoding_without_omitempty_decodes() -> None:
    request = decode(b'{"Header":{},"Host":"","Body":null,"Method":"POST","Path":"","QueryString":"",'
                     b'"Function":"figlet","QueueName":"","CallbackUrl":null}')  # fmt: skip

    assert request.invoke_path() == "/function/figlet/"
    assert request.callback_url() is None


def test_keys_match_case_insensitively_and_unknown_keys_are_ignored() -> None:
    request = decode(b'{"function":"f","BODY":"aGk=","querystring":"a=1","Extra":[1,2],"pAtH":"/x"}')

    assert request.invoke_path() == "/function/f/x?a=1"
    assert request.body == b"hi"


def test_a_later_duplicate_key_wins_as_in_go() -> None:
    assert decode(b'{"function":"a","Function":"b","FUNCTION":"c"}').function == "c"


def test_base64_may_carry_line_breaks_as_go_allows() -> None:
    assert decode(b'{"Function":"f","Body":"aGVs\\r\\nbG8="}').body == b"hello"


_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")


def _go_body(text: str) -> bytes | None:
    """What Go's ``base64.StdEncoding`` makes of a ``Body`` (``None``: refused), by its rules:
    line breaks skipped anywhere, whole quanta of four, at most two ``=`` and only at the end,
    trailing bits not checked."""
    text = text.replace("\r", "").replace("\n", "")
    data = text.rstrip("=")
    if len(text) % 4 or len(text) - len(data) > 2 or not _ALPHABET.issuperset(data):
        return None
    return base64.b64decode(text)


@st.composite
def _encoded_with_a_break(draw: st.DrawFn) -> str:
    """Valid base64 with a line break or a stray ``=`` somewhere in it."""
    text = base64.b64encode(draw(st.binary(max_size=120))).decode()
    at = draw(st.integers(min_value=0, max_value=len(text)))
    return text[:at] + draw(st.sampled_from(["\n", "\r\n", "\r", "="])) + text[at:]


#: Base64's alphabet, its padding, the line breaks Go skips, and what neither accepts.
_BODY_TEXT = st.one_of(
    st.text(alphabet="ABCDEFabcdef0123456789+/=\r\n -_.\x00\u00e9", max_size=40),
    st.binary(max_size=120).map(lambda raw: base64.b64encode(raw).decode()),
    _encoded_with_a_break(),
)


@given(text=_BODY_TEXT)
@example(text="0000=")  # padding after a whole quantum: Python's own strict decoder takes it
@example(text="YR==")  # trailing bits that are not zero: Go takes them
def test_a_body_decodes_exactly_as_go_reads_it(text: str) -> None:
    message = json.dumps({"Function": "f", "Body": text}).encode()
    expected = _go_body(text)

    if expected is None:
        with pytest.raises(DecodeError, match=r"^base64: "):
            decode(message)
    else:
        assert decode(message).body == expected


def test_a_callback_url_given_as_a_string_is_read_too() -> None:
    assert decode(b'{"Function":"f","CallbackUrl":"http://h:1/p?q=1"}').callback_url() == "http://h:1/p?q=1"


def test_a_callback_header_alone_is_honoured() -> None:
    request = decode(b'{"Function":"f","Header":{"X-Callback-Url":["http://h/cb"]}}')

    assert request.callback_url() == "http://h/cb"


def test_userinfo_survives_only_as_an_empty_user_like_go_renders_it() -> None:
    message = (
        b'{"Function":"f","CallbackUrl":{"Scheme":"http","Opaque":"","User":{},"Host":"h","Path":"/p",'
        b'"RawPath":"","OmitHost":false,"ForceQuery":false,"RawQuery":"","Fragment":"","RawFragment":""}}'
    )

    assert decode(message).callback_url() == "http://@h/p"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (b"not json", "json"),
        (b"\xff\xfe", "json"),
        (b"[1,2]", "type"),
        (b'"text"', "type"),
        (b"null", "type"),
        (b"{}", "function"),
        (b'{"Function":""}', "function"),
        (b'{"Function":"/"}', "invalid_request"),
        (b'{"Function":".."}', "invalid_request"),
        (b'{"Function":"f/../system"}', "invalid_request"),
        (b'{"Function":"f","Path":"/../../system/functions"}', "invalid_request"),
        (b'{"Function":"f","Path":"/%2e%2e/system/functions"}', "invalid_request"),
        (b'{"Function":"f","Path":"/%252E%252E/system"}', "invalid_request"),
        (b'{"Function":"f","Path":"/a\\\\..\\\\..\\\\system"}', "invalid_request"),
        (b'{"Function":"f","Path":"/..;/system"}', "invalid_request"),
        (b"[" * 100_000, "json"),
        (b'{"Function":"f","Header":' * 50_000, "json"),
        (b'{"Function":7}', "type"),
        (b'{"Function":"f","Body":"***"}', "base64"),
        (b'{"Function":"f","Body":"aGk"}', "base64"),
        (b'{"Function":"f","Header":{"A":"b"}}', "type"),
        (b'{"Function":"f","Header":[]}', "type"),
        (b'{"Function":"f","Annotations":{"a":1}}', "type"),
        (b'{"Function":"f","CallbackUrl":{"Host":5}}', "type"),
        (b'{"Function":"f","CallbackUrl":"http://h:port/"}', "callback_url"),
        (b'{"Function":"f","CallbackUrl":{"ForceQuery":"yes"}}', "type"),
    ],
)
def test_malformed_messages_raise_a_decode_error_with_a_reason(message: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(message)

    assert caught.value.reason == reason


def _case_variants(name: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda flips: "".join(c.swapcase() if flip else c for c, flip in zip(name, flips, strict=True))
    )


@given(
    function_key=_case_variants("Function"),
    body_key=_case_variants("Body"),
    body=st.binary(max_size=64),
)
def test_any_casing_of_known_keys_decodes_the_same(function_key: str, body_key: str, body: bytes) -> None:
    message = json.dumps({function_key: "fn", body_key: base64.b64encode(body).decode()}).encode()

    request = decode(message)

    assert (request.function, request.body) == ("fn", body)


_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"), max_size=20)
_header_name = st.from_regex(r"\A[A-Z][a-z]{0,8}(-[A-Z][a-z]{0,8}){0,2}\Z")


@given(
    request=st.builds(
        QueueRequest,
        function=st.from_regex(r"\A[a-z][a-z0-9-]{0,10}(\.[a-z]{1,8})?\Z"),
        method=st.sampled_from(["POST", "PUT", "GET"]),
        path=st.one_of(st.just(""), st.from_regex(r"\A(/[a-z0-9]{1,5}){1,3}\Z")),
        query_string=_text,
        body=st.binary(max_size=100),
        header=st.dictionaries(_header_name, st.lists(_text, min_size=1, max_size=3).map(tuple), max_size=4),
        host=_text,
        queue_name=_text,
        callback=st.none() | st.builds(GoURL, scheme=st.just("http"), host=st.just("h:1"), path=st.just("/cb")),
        annotations=st.dictionaries(_text, _text, max_size=3),
    )
)
def test_encode_then_decode_is_the_identity(request: QueueRequest) -> None:
    assert decode(encode(request)) == request


@pytest.mark.parametrize(
    ("path", "query", "target"),
    [
        ("/a/b", "q=1&r=two", "/function/f/a/b?q=1&r=two"),
        ("/a b", "", "/function/f/a%20b"),
        ("/caf\u00e9", "x=%C3%A9", "/function/f/caf%C3%A9?x=%C3%A9"),
        ("/a%2Fb", "", "/function/f/a%2Fb"),  # a valid encoding of the same path: Go keeps it
        ("/what?", "", "/function/f/what?"),  # a decoded "?" starts the query, as in Go
    ],
)
def test_the_request_line_carries_the_path_as_go_escapes_it(path: str, query: str, target: str) -> None:
    assert QueueRequest(function="f", path=path, query_string=query).request_target() == target


def test_a_path_go_could_not_send_is_an_error() -> None:
    with pytest.raises(URLError):
        QueueRequest(function="f", path="/100%").request_target()


@given(st.text(alphabet="abcXYZ019-._~$&+,/:;=@", max_size=30))
def test_paths_sent_as_they_are_are_those_go_leaves_as_they_are(path: str) -> None:
    # The shortcut for plain paths agrees with Go's EscapedPath, ported in gourl.
    assert GoURL(path="/" + path).escaped_path() == "/" + path
    try:
        request = QueueRequest(function="f", path="/" + path)
    except InvalidTarget:
        assert any(segment in (".", "..") for segment in re.split("[/;]", path))
        return
    assert request.request_target() == "/function/f/" + path
