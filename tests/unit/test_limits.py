"""A request's header limits: counted as their definition says, whatever the headers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from function.wire.limits import Limits

_HEADERS = st.dictionaries(st.text(max_size=8), st.lists(st.text(max_size=8), max_size=4).map(tuple), max_size=6)


def _by_definition(limits: Limits, header: dict[str, tuple[str, ...]]) -> str | None:
    count = sum(len(values) for values in header.values())
    if count > limits.max_headers:
        return f"{count} header values, more than max_request_headers={limits.max_headers}"
    size = sum(len(name) + len(value) for name, values in header.items() for value in values)
    if size > limits.max_header_bytes:
        return f"{size} bytes of headers, more than max_header_bytes={limits.max_header_bytes}"
    return None


@given(_HEADERS, st.integers(0, 12), st.integers(0, 120))
def test_headers_are_too_many_or_too_large_exactly_as_defined(
    header: dict[str, tuple[str, ...]], max_headers: int, max_header_bytes: int
) -> None:
    limits = Limits(max_headers, max_header_bytes)

    assert limits.header_problem(header) == _by_definition(limits, header)
