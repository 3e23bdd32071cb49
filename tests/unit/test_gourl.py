from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from function.wire.gourl import GoURL, URLError, parse


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        # Go's URL.String() output for these fields, as documented in net/url.
        (GoURL(scheme="http", host="h:8080", path="/hook", raw_query="x=1"), "http://h:8080/hook?x=1"),
        (GoURL(scheme="https", host="h", path="/a/b/done", raw_path="/a%2Fb/done"), "https://h/a%2Fb/done"),
        (GoURL(scheme="https", host="h", path="/a b"), "https://h/a%20b"),
        (GoURL(scheme="https", host="h", path="/x", raw_path="/y"), "https://h/x"),
        (GoURL(scheme="http", host="h", force_query=True), "http://h?"),
        (GoURL(scheme="http", host="h", fragment="a b"), "http://h#a%20b"),
        (GoURL(scheme="http", host="h", fragment="a/b", raw_fragment="a%2Fb"), "http://h#a%2Fb"),
        (GoURL(scheme="http", host="h", path="p"), "http://h/p"),
        (GoURL(scheme="mailto", opaque="a@b", raw_query="s=1"), "mailto:a@b?s=1"),
        (GoURL(scheme="http", has_user=True, host="h", path="/"), "http://@h/"),
        (GoURL(scheme="file", path="/etc"), "file:///etc"),
        (GoURL(scheme="file", path="/etc", omit_host=True), "file:/etc"),
        (GoURL(path="a:b"), "./a:b"),
        (GoURL(scheme="http", host="h\u00e9"), "http://h%C3%A9"),
        (GoURL(scheme="http", host="h", path="/\u2713?"), "http://h/%E2%9C%93%3F"),
        (GoURL(), ""),
    ],
)
def test_string_renders_like_go(url: GoURL, expected: str) -> None:
    assert url.string() == expected


@pytest.mark.parametrize(
    "raw",
    [
        "http://receiver.openfaas-fn:8080/hook?x=1",
        "https://cb.example.com:8443/hooks/a%2Fb/done?token=abc%20def&x=%E2%9C%93#frag",
        "http://[::1]:8080/p",
        "http://h/p?",
        "mailto:someone@example.com",
        "/relative/path",
        "http://h/a;b,c",
    ],
)
def test_parse_then_string_gives_back_the_url(raw: str) -> None:
    assert parse(raw).string() == raw


def test_parse_keeps_only_that_there_was_userinfo() -> None:
    url = parse("http://user:secret@h/p")

    assert url.has_user
    assert url.host == "h"
    assert "secret" not in url.string()


@pytest.mark.parametrize("raw", ["http://h:port/", "http://h/%zz", ":nope", "http://h/\x01", "1a:b"])
def test_parse_rejects_what_go_rejects(raw: str) -> None:
    with pytest.raises(URLError):
        parse(raw)


_segment = st.text(alphabet="abcXYZ019-._~!$&'()*+,;=:@% /?\u00e9", min_size=1, max_size=8)


@given(
    host=st.from_regex(r"\A[a-z][a-z0-9.-]{0,10}(:[0-9]{1,5})?\Z"),
    segments=st.lists(_segment, max_size=4),
    query=st.from_regex(r"\A[a-z0-9=&%]{0,12}\Z"),
    fragment=st.text(alphabet="abc #/?\u00e9", max_size=5),
)
def test_rendering_a_url_and_parsing_it_again_gives_the_same_fields(
    host: str, segments: list[str], query: str, fragment: str
) -> None:
    path = "".join("/" + s for s in segments)
    url = GoURL(scheme="http", host=host, path=path, raw_query=query, fragment=fragment)

    again = parse(url.string())

    assert (again.host, again.path, again.raw_query, again.fragment) == (host, path, query, fragment)
    assert again.string() == url.string()
