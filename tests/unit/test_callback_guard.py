from __future__ import annotations

import json
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from function.callbacks import guard as guard_module
from function.callbacks.guard import (
    Allowlist,
    Destination,
    Undeliverable,
    check,
    guard,
    guarded_resolver,
    is_forbidden,
)
from function.transport import DestinationRefused
from function.transport.http import encode_head, split_url
from function.wire.queue_request import DecodeError, decode


@pytest.mark.parametrize(
    ("address", "forbidden"),
    [
        ("169.254.169.254", True),
        ("169.254.0.1", True),
        ("fd00:ec2::254", True),
        ("fe80::1", True),
        ("::ffff:169.254.169.254", True),
        ("169.254.170.2", True),
        ("169.254.170.23", True),
        ("fd00:ec2::23", True),
        ("100.100.100.200", True),
        ("168.63.129.16", True),
        ("192.0.0.192", True),
        ("64:ff9b::a9fe:a9fe", True),
        ("2002:a9fe:a9fe::1", True),
        ("::ffff:100.100.100.200", True),
        ("100.100.100.201", False),
        ("10.0.0.1", False),
        ("127.0.0.1", False),
        ("receiver.openfaas-fn", False),
    ],
)
def test_link_local_and_metadata_addresses_are_forbidden(address: str, forbidden: bool) -> None:
    assert is_forbidden(address) is forbidden


ALLOW = Allowlist.parse("receiver.openfaas-fn, *.example.com, cb.internal:8443, https://hooks.acme.io/queue")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://receiver.openfaas-fn:8080/done", True),
        ("https://a.example.com/x", True),
        ("https://example.com.evil.net/x", False),
        ("https://cb.internal:8443/x", True),
        ("https://cb.internal/x", False),
        ("https://hooks.acme.io/queue/done?x=1", True),
        ("https://hooks.acme.io/other", False),
        ("https://hooks.acme.io.evil.net/queue/", False),
        ("http://elsewhere:8080/", False),
        ("https://hooks.acme.io@evil.net/queue/", False),
        ("https://hooks.acme.io:443@evil.net/queue/", False),
    ],
)
def test_the_allowlist_takes_hosts_wildcards_ports_and_prefixes(url: str, allowed: bool) -> None:
    assert ALLOW.allows(Destination.parse(url)) is allowed


def _why(allowlist: Allowlist, url: str) -> str:
    with pytest.raises(Undeliverable) as refused:
        check(allowlist, url)
    return str(refused.value)


def test_an_empty_list_allows_any_host_but_never_a_metadata_address() -> None:
    empty = Allowlist.parse("")

    assert check(empty, "http://anywhere:1234/x").origin == "http://anywhere:1234"
    assert _why(empty, "http://169.254.169.254/latest/meta-data") == "a link-local or metadata address"
    assert _why(empty, "ftp://host/x") == "not an http or https URL"
    assert _why(ALLOW, "http://elsewhere/") == "not in callback_allowlist"


def test_a_metadata_address_named_in_the_list_is_allowed() -> None:
    assert check(Allowlist.parse("169.254.169.254"), "http://169.254.169.254/x").host == "169.254.169.254"


def test_resolved_addresses_lose_the_forbidden_and_none_left_is_a_refusal() -> None:
    anyone = Allowlist()

    assert guard(anyone, "cb", 80, ["169.254.169.254", "10.1.2.3", "fe80::1%eth0"]) == ["10.1.2.3"]
    with pytest.raises(DestinationRefused):
        guard(anyone, "metadata.attacker", 80, ["169.254.169.254", "::ffff:169.254.169.254"])
    named = Allowlist.parse("metadata.internal")
    assert guard(named, "metadata.internal", 80, ["169.254.169.254"]) == ["169.254.169.254"]


async def test_the_resolver_guards_what_the_system_resolves() -> None:
    resolve = guarded_resolver(Allowlist())

    assert await resolve("127.0.0.1", 80) == ["127.0.0.1"]
    with pytest.raises(DestinationRefused):
        await resolve("169.254.169.254", 80)


url_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]) | st.sampled_from(list(":/?#[]@%.")), max_size=40
)
url_objects = (
    st.fixed_dictionaries(
        {},
        optional={
            key: st.text(max_size=12)
            | st.sampled_from(["169.254.169.254", "[::1]", "[h]", "h:99999", "100.100.100.200"])
            for key in ("Scheme", "Host", "Path", "RawQuery", "Opaque", "Fragment")
        },
    )
    | st.none()
)


def _check_sendable(allowlist: Allowlist, url: str) -> None:
    """Never an exception but Undeliverable; what passes can be sent and is not a metadata host."""
    try:
        destination = check(allowlist, url)
    except Undeliverable:
        return
    encode_head("POST", destination.target, destination.origin.partition("://")[2], [], b"")
    assert not is_forbidden(destination.host)
    assert split_url(destination.origin + destination.target) == (destination.origin, destination.target)


@settings(max_examples=500)
@given(scheme=st.sampled_from(["http://", "https://", "ftp://", ""]), rest=url_text)
@example(scheme="http://", rest="0/\x00")  # once passed the guard, then no request could carry it
@example(scheme="http://", rest="h/a b")
def test_any_url_text_is_read_or_refused_with_a_reason(scheme: str, rest: str) -> None:
    _check_sendable(Allowlist(), scheme + rest)
    _check_sendable(ALLOW, scheme + rest)


@settings(max_examples=300)
@given(callback=url_objects | url_text)
def test_any_stored_callback_url_is_read_or_refused_with_a_reason(callback: object) -> None:
    message = json.dumps({"Function": "f", "CallbackUrl": callback}).encode()
    try:
        url = decode(message).callback_url()
    except DecodeError:
        return
    if url is not None:
        _check_sendable(Allowlist(), url)


def _verdict(allowlist: Allowlist, url: str) -> Destination | str:
    try:
        return check(allowlist, url)
    except Undeliverable as exc:
        return str(exc)


some_urls = st.sampled_from(
    [
        "http://127.0.0.1:8080/callback",
        "https://receiver.openfaas-fn/hooks/done?token=a",
        "https://hooks.example.com/queue/x",
        "http://169.254.169.254/latest",
        "http://metadata.google.internal/",
        "ftp://h/",
        "http://[::1",
        "http://h:99999/",
    ]
)


@given(urls=st.lists(some_urls | url_text.map(lambda rest: "http://" + rest), max_size=30), size=st.integers(1, 4))
def test_a_remembered_verdict_is_the_verdict_a_fresh_list_gives(urls: list[str], size: int) -> None:
    """Whatever the order, repeats and evictions, the list answers as one that never saw a URL."""
    remembering = [Allowlist(), Allowlist(ALLOW.hosts, ALLOW.prefixes)]
    with mock.patch.object(guard_module, "CHECKED_URLS", size):
        for url in urls:
            for allowlist in remembering:
                fresh = Allowlist(allowlist.hosts, allowlist.prefixes)
                assert _verdict(allowlist, url) == _verdict(fresh, url)
                assert len(allowlist._verdicts) <= size
