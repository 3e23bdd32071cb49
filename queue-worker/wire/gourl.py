"""Go's ``net/url.URL``: the JSON object the gateway stores as ``CallbackUrl``, turned back
into text exactly as Go's ``URL.String()`` does, and parsed from text as ``url.Parse`` does.

Go escapes byte by byte, so these functions work on UTF-8 bytes and give the same text as Go
for any input, ASCII or not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

_HEX = "0123456789ABCDEF"
_UNRESERVED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~")
_HOST_EXTRA = frozenset(b"!$&'()*+,;=:[]<>\"")
_RESERVED = frozenset(b"$&+,/:;=?@")
_VALID_ENCODED_EXTRA = frozenset(b"!$&'()*+,;=:@[]%")


class URLError(ValueError):
    """A URL that Go's ``url.Parse`` would reject."""


def _should_escape(c: int, mode: str) -> bool:
    """Go's ``shouldEscape`` for one byte; ``mode`` is path, host, user, query or fragment."""
    if c in _UNRESERVED:
        return False
    if mode == "host" and c in _HOST_EXTRA:
        return False
    if c in _RESERVED:
        if mode == "path":
            return c == ord("?")
        if mode == "user":
            return c in b"@/?:"
        return mode != "fragment"
    return not (mode == "fragment" and c in b"!()*")


def _escape(text: str, mode: str) -> str:
    out: list[str] = []
    for c in text.encode("utf-8", "surrogatepass"):
        out.append(f"%{_HEX[c >> 4]}{_HEX[c & 15]}" if _should_escape(c, mode) else chr(c))
    return "".join(out)


def _unescape(text: str, mode: str) -> str:
    """Go's ``unescape`` for path, fragment, user and host; raises :class:`URLError` on a bad ``%``."""
    raw = text.encode("utf-8", "surrogatepass")
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == ord("%"):
            pair = raw[i + 1 : i + 3]
            if len(pair) < 2 or any(b not in b"0123456789abcdefABCDEF" for b in pair):
                raise URLError(f"invalid URL escape {raw[i : i + 3].decode('utf-8', 'replace')!r}")
            if mode == "host" and int(pair[:1], 16) < 8 and pair != b"25":
                raise URLError(f"invalid URL escape '%{pair.decode()}'")
            out.append(int(pair, 16))
            i += 3
            continue
        if mode == "host" and c < 0x80 and _should_escape(c, "host"):
            raise URLError(f"invalid character {chr(c)!r} in host name")
        out.append(c)
        i += 1
    return out.decode("utf-8", "surrogateescape")


def _valid_encoded(text: str, mode: str) -> bool:
    return all(c in _VALID_ENCODED_EXTRA or not _should_escape(c, mode) for c in text.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True, slots=True)
class GoURL:
    """The exported fields of Go's ``url.URL``; ``has_user`` is ``User != nil``.

    ``Userinfo`` has no exported fields, so the gateway's JSON keeps only whether there was
    one (``{}``), never the credentials; :meth:`string` then renders ``scheme://@host``.
    """

    scheme: str = ""
    opaque: str = ""
    has_user: bool = False
    host: str = ""
    path: str = ""
    raw_path: str = ""
    omit_host: bool = False
    force_query: bool = False
    raw_query: str = ""
    fragment: str = ""
    raw_fragment: str = ""

    def escaped_path(self) -> str:
        """Go's ``EscapedPath``: ``RawPath`` when it is a valid encoding of ``Path``."""
        if self.raw_path and _valid_encoded(self.raw_path, "path"):
            try:
                if _unescape(self.raw_path, "path") == self.path:
                    return self.raw_path
            except URLError:
                pass
        if self.path == "*":
            return "*"
        return _escape(self.path, "path")

    def escaped_fragment(self) -> str:
        """Go's ``EscapedFragment``."""
        if self.raw_fragment and _valid_encoded(self.raw_fragment, "fragment"):
            try:
                if _unescape(self.raw_fragment, "fragment") == self.fragment:
                    return self.raw_fragment
            except URLError:
                pass
        return _escape(self.fragment, "fragment")

    def _authority(self) -> str:
        """``//``, userinfo and host, by the rules of Go's ``URL.String()``."""
        if not (self.scheme or self.host or self.has_user):
            return ""
        if self.omit_host and not self.host and not self.has_user:
            return ""
        slashes = "//" if self.host or self.path or self.has_user else ""
        return slashes + ("@" if self.has_user else "") + _escape(self.host, "host")

    def string(self) -> str:
        """Go's ``URL.String()``."""
        out = self.scheme + ":" if self.scheme else ""
        if self.opaque:
            out += self.opaque
        else:
            out += self._authority()
            path = self.escaped_path()
            if path and path[0] != "/" and self.host:
                out += "/"
            # A first segment with a colon would read as a scheme (RFC 3986 section 4.2).
            if not out and ":" in path.partition("/")[0]:
                out += "./"
            out += path
        if self.force_query or self.raw_query:
            out += "?" + self.raw_query
        if self.fragment:
            out += "#" + self.escaped_fragment()
        return out


def parse(raw: str) -> GoURL:
    """Go's ``url.Parse``; userinfo is kept only as ``has_user``, as the gateway's JSON keeps it.

    Raises:
        URLError: Go would reject the URL.
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise URLError("invalid control character in URL")
    rest, has_fragment, fragment = raw.partition("#")
    scheme, rest = _scheme(rest)
    url = GoURL(scheme=scheme)
    if rest.endswith("?") and rest.count("?") == 1:
        url, rest = replace(url, force_query=True), rest[:-1]
    else:
        rest, _, raw_query = rest.partition("?")
        url = replace(url, raw_query=raw_query)
    if not rest.startswith("/") and scheme:
        url = replace(url, opaque=rest)
    else:
        if not rest.startswith("/") and ":" in rest.partition("/")[0]:
            raise URLError("first path segment in URL cannot contain colon")
        if (scheme or not rest.startswith("///")) and rest.startswith("//"):
            authority, slash, path = rest[2:].partition("/")
            rest = slash + path
            userinfo, at, host = authority.rpartition("@")
            if at:
                for part in userinfo.split(":", 1):
                    _unescape(part, "user")
            url = replace(url, host=_host(host), has_user=bool(at))
        path = _unescape(rest, "path")
        url = replace(url, path=path, raw_path="" if _escape(path, "path") == rest else rest)
    if has_fragment and fragment:
        decoded = _unescape(fragment, "fragment")
        url = replace(url, fragment=decoded, raw_fragment="" if _escape(decoded, "fragment") == fragment else fragment)
    return url


def _scheme(raw: str) -> tuple[str, str]:
    for i, c in enumerate(raw):
        if c.isascii() and c.isalpha():
            continue
        if c.isascii() and (c.isdigit() or c in "+-."):
            if i == 0:
                return "", raw
            continue
        if c == ":":
            if i == 0:
                raise URLError("missing protocol scheme")
            return raw[:i].lower(), raw[i + 1 :]
        return "", raw
    return "", raw


def _host(host: str) -> str:
    if host.startswith("["):
        close = host.rfind("]")
        if close < 0:
            raise URLError("missing ']' in host")
        port = host[close + 1 :]
    else:
        colon = host.rfind(":")
        port = host[colon:] if colon >= 0 else ""
    if port and (port[0] != ":" or not all(c in "0123456789" for c in port[1:])):
        raise URLError(f"invalid port {port!r} after host")
    return _unescape(host, "host")
