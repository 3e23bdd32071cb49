"""The gateway's ``QueueRequest`` JSON, read exactly as Go's ``encoding/json`` reads it.

Go matches keys case-insensitively (an exact match first), lets a later duplicate key win,
treats ``null`` and an absent key alike, ignores unknown keys, reads ``[]byte`` as padded
standard base64 (skipping ``\\r`` and ``\\n``), and fails on a value of the wrong type.
:func:`encode` writes the form the gateway writes, for publishers and replays.

Bodies are decoded by pybase64 (SIMD), which refuses what Go's decoder refuses: a 64 KiB body
in 9 µs against 210 µs with ``binascii``, the largest part of what such a message cost the
worker (923 µs of CPU a message at 64 KiB in ``make bench`` before). It is also stricter than
the standard library's strict decoder, which let padding after a whole quantum (``0000=``)
through, as Go does not.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pybase64

from .gourl import GoURL, URLError, parse
from .target import InvalidTarget, check_function, check_path

#: ``DecodeError.reason`` of a request whose function or path is not allowed.
INVALID_REQUEST = "invalid_request"


class DecodeError(ValueError):
    """The message is not a usable ``QueueRequest``; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True, slots=True)
class QueueRequest:
    """One queued invocation, as the gateway stored it.

    Raises:
        InvalidTarget: on construction, when ``function`` or ``path`` could lead anywhere but
            to that function (see :mod:`.target`).
    """

    function: str
    method: str = "POST"
    path: str = ""
    query_string: str = ""
    body: bytes = b""
    #: Header name to values, in the order they were stored.
    header: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    host: str = ""
    queue_name: str = ""
    callback: GoURL | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    environment: Mapping[str, str] = field(default_factory=dict)
    #: Lower-case header name to its first value, derived once from ``header``.
    _first: Mapping[str, str] = field(init=False, repr=False, compare=False)
    #: ``X-Call-Id`` as the gateway set it, or ``""`` (read on every route: derived once).
    call_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_function(self.function)
        if self.path:
            check_path(self.path)
        first: dict[str, str] = {}
        for key, values in self.header.items():
            if values:
                first.setdefault(key.lower(), values[0])
        object.__setattr__(self, "_first", first)
        object.__setattr__(self, "call_id", first.get("x-call-id", ""))

    def header_value(self, name: str) -> str:
        """The first value of a header, matched case-insensitively, or ``""``."""
        return self._first.get(name.lower(), "")

    def callback_url(self) -> str | None:
        """Where the result goes: ``CallbackUrl`` as Go's ``URL.String()`` renders it.

        A publisher that set only the ``X-Callback-Url`` header is honoured too.
        """
        if self.callback is not None:
            return self.callback.string()
        return self.header_value("X-Callback-Url") or None

    def invoke_path(self) -> str:
        """The path and query to call after the gateway URL: ``/function/<name><path>?<query>``."""
        query = self.query_string.lstrip("?")
        return f"/function/{self.function}{self.path or '/'}" + (f"?{query}" if query else "")

    def request_target(self) -> str:
        """What goes on the request line: :meth:`invoke_path` as Go's ``http.Client`` sends it,
        the path escaped by ``URL.EscapedPath`` (``Path`` is stored decoded) and the query as
        stored. Like Go, a decoded ``?`` in the path starts the query.

        Raises:
            URLError: Go could not have sent it (an invalid %-escape in the path).
        """
        path, question, query = self.invoke_path().partition("?")
        if _PLAIN_PATH.fullmatch(path) is None:
            path = parse(path).escaped_path()
        return path + question + query


#: Path characters that Go's ``EscapedPath`` leaves as they are: most paths need no escaping.
_PLAIN_PATH = re.compile(r"[A-Za-z0-9\-._~$&+,/:;=@]*")


class _Pairs(list[tuple[str, Any]]):
    """A JSON object as its key-value pairs in document order (Go reads them in that order)."""


def _object(key: str, value: Any, expected: str) -> _Pairs | None:
    """The pairs of a JSON object, ``None`` for ``null``; anything else is a type error."""
    if value is None:
        return None
    if not isinstance(value, _Pairs):
        raise DecodeError("type", f"{key} must be {expected}")
    return value


def _fold(name: str) -> str:
    """Go's ``foldName``: each rune to upper(lower(rune)) with simple, one-rune case mapping."""
    out = []
    for ch in name:
        lower = ch.lower() if len(ch.lower()) == 1 else ch
        upper = lower.upper() if len(lower.upper()) == 1 else lower
        out.append(upper)
    return "".join(out)


def _string(key: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DecodeError("type", f"{key} must be a string")
    return value


def _string_map(key: str, value: Any) -> dict[str, str]:
    # A later duplicate key overwrites an earlier one, as in a Go map.
    return {k: _string(f"{key}.{k}", v) for k, v in _object(key, value, "an object of strings") or ()}


def _header(key: str, value: Any) -> dict[str, tuple[str, ...]]:
    header: dict[str, tuple[str, ...]] = {}
    for name, values in _object(key, value, "an object of string lists") or ():
        # Every stored header is a list of strings: taken whole, with no reader (nor an error's
        # location) per value: half what reading them one by one cost (1.4 against 2.8 µs).
        if type(values) is list and _ONLY_STRINGS.issuperset(map(type, values)):
            header[name] = tuple(values)
            continue
        if values is not None and not isinstance(values, list):
            raise DecodeError("type", f"{key}.{name} must be a list of strings")
        header[name] = tuple(_string(f"{key}.{name}", v) for v in values or ())
    return header


#: What a list of header values holds (JSON gives no subclass of ``str``).
_ONLY_STRINGS = frozenset({str})


def _body(key: str, value: Any) -> bytes:
    text = _string(key, value)
    if "\n" in text or "\r" in text:  # replace() reads the whole body even when there are none
        text = text.replace("\r", "").replace("\n", "")
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DecodeError("base64", f"{key} is not padded standard base64") from exc


def _bool(key: str, value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise DecodeError("type", f"{key} must be true or false")
    return value


#: Go's ``url.URL`` fields and how each is read; ``User`` keeps only whether it was set.
_URL_FIELDS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "Scheme": ("scheme", _string),
    "Opaque": ("opaque", _string),
    "User": ("has_user", lambda key, v: _user(key, v)),
    "Host": ("host", _string),
    "Path": ("path", _string),
    "RawPath": ("raw_path", _string),
    "OmitHost": ("omit_host", _bool),
    "ForceQuery": ("force_query", _bool),
    "RawQuery": ("raw_query", _string),
    "Fragment": ("fragment", _string),
    "RawFragment": ("raw_fragment", _string),
}


def _user(key: str, value: Any) -> bool:
    return _object(key, value, "an object or null") is not None


def _callback(key: str, value: Any) -> GoURL | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse(value)
        except URLError as exc:
            raise DecodeError("callback_url", str(exc)) from exc
    return GoURL(**_URL.read(key, _object(key, value, "a URL object or string") or ()))


#: ``QueueRequest`` JSON keys, their attribute and reader.
_FIELDS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "Header": ("header", _header),
    "Host": ("host", _string),
    "Body": ("body", _body),
    "Method": ("method", _string),
    "Path": ("path", _string),
    "QueryString": ("query_string", _string),
    "Function": ("function", _string),
    "QueueName": ("queue_name", _string),
    "Annotations": ("annotations", _string_map),
    "Labels": ("labels", _string_map),
    "Environment": ("environment", _string_map),
    "CallbackUrl": ("callback", _callback),
}


@dataclass(frozen=True, slots=True)
class _Struct:
    """A Go struct's JSON fields: each name with its attribute and reader, and the folded names
    Go also accepts (computed once, not per message)."""

    fields: Mapping[str, tuple[str, Callable[[str, Any], Any]]]
    folded: Mapping[str, str]

    @classmethod
    def of(cls, fields: Mapping[str, tuple[str, Callable[[str, Any], Any]]]) -> _Struct:
        return cls(fields, {_fold(name): name for name in fields})

    def read(self, where: str, pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
        """Read a JSON object into attributes the way Go fills a struct, key by key in order."""
        values: dict[str, Any] = {}
        for key, value in pairs:
            name = key if key in self.fields else self.folded.get(_fold(key))
            if name is None:
                continue
            attribute, read = self.fields[name]
            values[attribute] = read(f"{where}.{name}" if where else name, value)
        return values


_URL = _Struct.of(_URL_FIELDS)
#: One decoder for every message: json.loads with a hook would build a new one each time.
_DECODER = json.JSONDecoder(object_pairs_hook=_Pairs)
_REQUEST = _Struct.of(_FIELDS)


def decode(data: bytes) -> QueueRequest:
    """Decode one message body.

    Raises:
        DecodeError: not JSON, not an object, a wrong type, bad base64, no ``Function``, or a
            function or path that is not allowed (reason :data:`INVALID_REQUEST`).
    """
    try:
        document = _DECODER.decode(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecodeError("json", f"not JSON ({exc})") from exc
    except RecursionError:
        # Go's decoder allows 10,000 levels; Python's stack gives out sooner. Either way,
        # no QueueRequest is nested at all.
        raise DecodeError("json", "nested too deeply") from None
    if not isinstance(document, _Pairs):
        raise DecodeError("type", f"expected a JSON object, got {type(document).__name__}")
    values = _REQUEST.read("", document)
    if not values.get("function"):
        raise DecodeError("function", "Function is empty or missing")
    if not values.get("method"):
        values["method"] = "POST"
    try:
        return QueueRequest(**values)
    except InvalidTarget as exc:
        raise DecodeError(INVALID_REQUEST, str(exc)) from exc


def encode(request: QueueRequest) -> bytes:
    """Encode as the gateway does (Go's ``json.Marshal`` with the current ``omitempty`` tags)."""
    document: dict[str, Any] = {}
    if request.header:
        document["Header"] = {k: list(v) for k, v in request.header.items()}
    if request.host:
        document["Host"] = request.host
    if request.body:
        document["Body"] = pybase64.b64encode_as_string(request.body)
    document["Method"] = request.method
    if request.path:
        document["Path"] = request.path
    if request.query_string:
        document["QueryString"] = request.query_string
    document["Function"] = request.function
    if request.queue_name:
        document["QueueName"] = request.queue_name
    for key, mapping in (
        ("Annotations", request.annotations),
        ("Labels", request.labels),
        ("Environment", request.environment),
    ):
        if mapping:
            document[key] = dict(mapping)
    if request.callback is not None:
        url = request.callback
        document["CallbackUrl"] = {
            "Scheme": url.scheme,
            "Opaque": url.opaque,
            "User": {} if url.has_user else None,
            "Host": url.host,
            "Path": url.path,
            "RawPath": url.raw_path,
            "OmitHost": url.omit_host,
            "ForceQuery": url.force_query,
            "RawQuery": url.raw_query,
            "Fragment": url.fragment,
            "RawFragment": url.raw_fragment,
        }
    return json.dumps(document, separators=(",", ":")).encode()
