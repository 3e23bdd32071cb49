"""Whatever a publisher sends, decoding ends in a request or a DecodeError, and a request can
only ever invoke ``/function/<valid name>``."""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any
from urllib.parse import unquote

from hypothesis import given, settings
from hypothesis import strategies as st

from function.wire.gourl import URLError
from function.wire.queue_request import DecodeError, QueueRequest, decode
from function.wire.target import InvalidTarget, check_path

VALID_NAME = re.compile(r"[-a-zA-Z_0-9.]+")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=30,
)
#: Keys of the real type in any case, beside strangers, so the decoder's every branch is reached.
keys = st.sampled_from(
    ["Function", "function", "FUNCTION", "Path", "path", "Body", "Header", "CallbackUrl", "QueryString", "Method"]
) | st.text(max_size=10)
#: Text that looks like paths and names, dot-segments and escapes included.
pathish = st.lists(st.sampled_from([*"./\\%;2eE5af-_x", "..", "%2e", "%2E", "%25", "/../"]), max_size=15).map("".join)


def _assert_confined(request: QueueRequest) -> None:
    """The target starts with /function/<name>/ and no reading of it climbs out."""
    assert VALID_NAME.fullmatch(request.function)
    assert request.function not in (".", "..")
    path = request.invoke_path().partition("?")[0]
    prefix = f"/function/{request.function}"
    assert path.startswith(prefix + "/")
    for reading in {path, unquote(path), unquote(unquote(path)), path.replace("\\", "/")}:
        normalised = posixpath.normpath(reading.replace("\\", "/").replace(";", "/"))
        assert normalised == prefix or normalised.startswith(prefix + "/")
    try:
        target = request.request_target()
    except URLError:
        return  # answered 400 without a call
    assert target.startswith(prefix + "/")


@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_or_raise_a_decode_error(data: bytes) -> None:
    try:
        request = decode(data)
    except DecodeError:
        return
    _assert_confined(request)


@settings(max_examples=300)
@given(st.dictionaries(keys, json_values | pathish, max_size=8))
def test_arbitrary_json_objects_decode_or_raise_a_decode_error(document: dict[str, Any]) -> None:
    try:
        request = decode(json.dumps(document).encode())
    except DecodeError:
        return
    _assert_confined(request)


@settings(max_examples=500)
@given(function=st.text(alphabet=st.sampled_from(list("ab.-_/%2e")), max_size=8), path=pathish)
def test_a_request_is_made_only_for_its_own_function(function: str, path: str) -> None:
    document = {"Function": function, "Path": "/" + path if path else ""}
    request: QueueRequest | DecodeError
    try:
        request = decode(json.dumps(document).encode())
    except DecodeError as exc:
        request = exc
    if isinstance(request, DecodeError):
        assert request.reason in ("function", "invalid_request")
        return
    _assert_confined(request)


@given(pathish)
def test_check_path_passes_only_paths_without_a_dot_segment_in_any_reading(path: str) -> None:
    try:
        check_path(path)
    except InvalidTarget:
        return
    for reading in (path, unquote(path), unquote(unquote(path))):
        assert not any(seg in (".", "..") for seg in re.split(r"[/\\;]", reading))
