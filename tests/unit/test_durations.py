from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runtime import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("500ms", 0.5),
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("1h", 3600.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("2us", 2e-6),
        ("2\u00b5s", 2e-6),
        ("2\u03bcs", 2e-6),
        ("3ns", 3e-9),
        ("-1.5m", -90.0),
        ("+5s", 5.0),
        ("1h2m3s4ms", 3723.004),
    ],
)
def test_go_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "1x", "1.5", ".s", "1 s", "-", "1s ", "1m-3s", "ms"])
def test_text_that_go_rejects_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@given(st.lists(st.tuples(st.integers(0, 999), st.sampled_from(["h", "m", "s", "ms"])), min_size=1, max_size=4))
def test_a_sum_of_terms_parses_to_the_sum_of_their_values(terms: list[tuple[int, str]]) -> None:
    scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    text = "".join(f"{n}{unit}" for n, unit in terms)

    assert parse_duration(text) == pytest.approx(sum(n * scale[unit] for n, unit in terms))


@given(st.integers(0, 10**6).map(lambda ms: ms / 1000))
def test_formatted_durations_parse_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
