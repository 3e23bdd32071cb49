"""Log lines: rendered as JSON by orjson (json where orjson refuses), and written together once
per step of the event loop."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from runtime.logs import ENVELOPE, MASK, SECRET_NAMES, LoopWriter, _mask, redact, render_json

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),  # beyond 64 bits too, which orjson refuses
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),  # lone surrogates too, which orjson refuses
)


def _not_secret(name: str) -> bool:
    return name.lower() not in SECRET_NAMES


keys = st.text().filter(_not_secret)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3))
fields = st.dictionaries(
    st.sampled_from(sorted(ENVELOPE))
    | st.from_regex(r"[a-zA-Z][a-zA-Z0-9]{0,8}", fullmatch=True).filter(lambda k: _not_secret(k) and k != "event"),
    values,
    max_size=5,
)
#: A secret's name in any case, as a header or a field may spell it.
secret_names = st.sampled_from(sorted(SECRET_NAMES)).flatmap(
    lambda name: st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True))
    )
)


@given(event=st.text(), extra=fields)
def test_a_line_is_the_json_object_json_would_write(event: str, extra: dict[str, Any]) -> None:
    line = render_json(None, "info", {"event": event, **extra})

    document = json.loads(line)
    assert "\n" not in line
    assert (document.pop("level"), document.pop("msg")) == ("info", event)
    assert isinstance(document.pop("ts"), float)
    # A field named like the envelope is kept beside it, not over it.
    assert document == json.loads(json.dumps({f"fields.{k}" if k in ENVELOPE else k: v for k, v in extra.items()}))


@given(extra=fields, name=secret_names, secret=values, data=st.data())
def test_a_secret_is_masked_at_any_depth(extra: dict[str, Any], name: str, secret: Any, data: st.DataObject) -> None:
    """A secret-named field is not written, at the top or inside nested maps and lists."""
    path = data.draw(st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True).filter(_not_secret), max_size=3))
    nested: Any = {name: secret}
    for step in reversed(path):
        nested = {step: [nested]}

    document = json.loads(render_json(None, "info", {"event": "e", **extra, name: secret, "top": nested}))

    found = document["top"]
    for step in path:
        found = found[step][0]
    assert document[name] == found[name] == MASK


def test_an_object_json_cannot_write_is_written_as_its_repr() -> None:
    assert json.loads(render_json(None, "info", {"event": "e", "at": object}))["at"] == repr(object)


def test_lines_logged_in_one_step_of_the_loop_are_written_together_in_order() -> None:
    class Writes(io.StringIO):
        count = 0

        def write(self, text: str) -> int:
            self.count += 1
            return super().write(text)

    stream = Writes()
    writer = LoopWriter(stream)

    async def run() -> list[str]:
        for i in range(5):
            writer.msg(f"line {i}")
        before = stream.getvalue()
        await asyncio.sleep(0)  # the step ends: the lines go out
        writer.msg("line 5")
        await asyncio.sleep(0)
        return [before]

    [before] = asyncio.run(run())
    writer.msg("off the loop")  # no loop: at once

    assert before == ""
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(6)] + ["off the loop"]
    assert stream.count == 3


def test_what_waits_is_written_by_flush_as_at_exit() -> None:
    stream = io.StringIO()
    writer = LoopWriter(stream)

    async def run() -> None:
        writer.msg("last words")
        writer.flush()

    asyncio.run(run())

    assert stream.getvalue() == "last words\n"


def _field_by_field(event_dict: dict[str, Any]) -> dict[str, Any]:
    """What redaction makes of a line looking at every field, with nothing remembered."""
    if any(not _not_secret(k) or isinstance(v, dict | list | tuple) for k, v in event_dict.items()):
        return _mask(event_dict)  # type: ignore[no-any-return]
    return event_dict


#: A few names, plain and secret in any case, so that lines share them as real lines do.
pooled_names = st.sampled_from(["callId", "function", "status", "Token", "authorization", "x", "SECRET", "bytes"])
#: Values that may hold a secret-named field themselves, or be neither scalar nor container.
pooled_values = st.recursive(
    scalars | st.sampled_from([ENVELOPE, frozenset()]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(pooled_names, inner, max_size=3),
    max_leaves=6,
)
lines = st.lists(st.dictionaries(pooled_names, pooled_values, max_size=5))


@given(lines=lines)
def test_a_line_is_masked_as_a_look_at_every_field_would_mask_it_whatever_lines_came_before(
    lines: list[dict[str, Any]],
) -> None:
    for line in lines:
        assert redact(None, "info", dict(line)) == _field_by_field(line)
