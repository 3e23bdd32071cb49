"""Where callbacks may go: an allow-list of hosts and URL prefixes, and never to metadata services.

Callers choose callback URLs, so without a guard the worker would POST wherever they say: to
internal services, or to a cloud's metadata endpoint. With ``callback_allowlist`` set, only the
hosts (``receiver.openfaas-fn``, ``*.example.com``, ``host:8080``) and URL prefixes
(``https://hooks.example.com/queue/``) it lists are allowed. Whatever the list, link-local and
metadata addresses (:data:`METADATA_NETWORKS`, :data:`METADATA_NAMES`) are refused unless their
host is allowed by name: checked before the function is invoked, and again on the addresses a
callback connects to.

Every URL is read once into a :class:`Destination`, and every question (allowed? where to
connect? what to log?) is answered from that, never by parsing the text again: Go and Python
disagree on URLs (ports over 65535, brackets around names), and a URL that cannot be read
here is refused with a reason, never an exception.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import SplitResult, unquote, urlsplit

from ..transport import DestinationRefused
from ..transport.headers import UNSAFE_TARGET
from ..transport.http import Resolve

#: Never a callback's destination unless allowed by name. Link-local holds most clouds'
#: metadata service (AWS incl. ECS and EKS Pod Identity, GCP, Azure, Oracle, DigitalOcean,
#: Hetzner, OpenStack, Tencent at 169.254.0.23); the others are the exceptions.
METADATA_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),  # IPv4 link-local: AWS, GCP, Azure, OCI, DO, ...
    ipaddress.ip_network("fe80::/10"),  # IPv6 link-local
    ipaddress.ip_network("fd00:ec2::/32"),  # AWS IMDS, ECS and EKS Pod Identity over IPv6
    ipaddress.ip_network("100.100.100.200/32"),  # Alibaba Cloud
    ipaddress.ip_network("168.63.129.16/32"),  # Azure WireServer
    ipaddress.ip_network("192.0.0.192/32"),  # Oracle Cloud (legacy)
)
#: Metadata services' own names, refused before any lookup (their addresses are refused too).
METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.com",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.platformequinix.com",
    }
)
#: URLs whose verdict an allow-list remembers. Callbacks mostly go to a few receivers, and
#: reading a URL and checking it cost 7 µs a message (profiled at 100 in flight with a callback
#: on each), a remembered verdict 0.1 µs; a URL made per call only costs its own reading.
CHECKED_URLS = 1024
#: NAT64's well-known prefix embeds an IPv4 address in its last 32 bits (RFC 6052).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: A host name that DNS can be asked about (letters, digits, ``-``, ``_`` and dots).
_HOST_NAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})")


class Undeliverable(ValueError):
    """A callback URL that nothing will ever be posted to; the message says why."""


def is_forbidden(address: str) -> bool:
    """Whether an IP address is link-local or a metadata service's, however it is spelled
    (IPv4-mapped, NAT64 or 6to4 IPv6 included)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            candidates.append(ip.sixtofour)
        if ip in _NAT64:
            candidates.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return any(candidate in network for candidate in candidates for network in METADATA_NETWORKS)


@dataclass(frozen=True, slots=True)
class Destination:
    """A callback URL, read once: where to connect, what to send, and what to log."""

    #: The URL as given (Go's ``URL.String()`` of the stored one).
    url: str
    scheme: str
    #: Lower case; an IPv6 address without its brackets.
    host: str
    #: As written, or ``None`` for the scheme's default.
    port: int | None
    #: ``scheme://host[:port]``, what a transport connects to.
    origin: str
    #: Path and query, what the request line carries (never the fragment).
    target: str
    username: str | None
    password: str | None

    @classmethod
    def parse(cls, url: str) -> Destination:
        """Read a callback URL.

        Raises:
            Undeliverable: not an http or https URL with a host this worker can connect to.
        """
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:  # an out-of-range port, an unbalanced bracket, ...
            raise Undeliverable(f"not a URL this worker can post to ({exc})") from None
        if parts.scheme not in ("http", "https"):
            raise Undeliverable("not an http or https URL")
        host = _host(parts)
        if port == 0:
            raise Undeliverable("port 0 cannot be connected to")
        authority = f"[{host}]" if ":" in host else host
        origin = f"{parts.scheme}://{authority}" + (f":{port}" if port is not None else "")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not target.startswith("/"):
            raise Undeliverable("the path does not start with /")
        if not UNSAFE_TARGET.isdisjoint(target):
            raise Undeliverable("the path or query holds a space, a line break or NUL, which no request can carry")
        username = None if parts.username is None else unquote(parts.username)
        password = None if parts.password is None else unquote(parts.password)
        return cls(url, parts.scheme, host, port, origin, target, username, password)

    @property
    def loggable(self) -> str:
        """The URL without query, fragment or userinfo, where tokens hide."""
        return self.origin + (self.target.partition("?")[0])


def _host(parts: SplitResult) -> str:
    netloc_host = parts.netloc.rpartition("@")[2]
    host = (parts.hostname or "").lower()
    if netloc_host.startswith("["):
        try:
            ip = ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise Undeliverable("brackets around something that is not an IPv6 address") from None
        if "%" in host:
            raise Undeliverable("an IPv6 zone cannot be posted to")
        return str(ip)
    if _HOST_NAME.fullmatch(host) is None:
        raise Undeliverable("no host, or a host that is neither a name nor an address")
    return host


def _host_matches(entry: str, host: str, port: int | None) -> bool:
    name, _, entry_port = entry.partition(":")
    if entry_port and (port is None or entry_port != str(port)):
        return False
    return host == name or (name.startswith("*.") and host.endswith(name[1:]))


def _with_path(url: str) -> str:
    """``https://h`` as ``https://h/``, so a prefix ``https://h/`` matches it and not ``https://h.evil``."""
    return url if "/" in url.partition("://")[2] else url + "/"


@dataclass(frozen=True, slots=True)
class Allowlist:
    """Hosts (``name``, ``*.suffix``, ``name:port``) and URL prefixes callbacks may go to."""

    hosts: tuple[str, ...] = ()
    prefixes: tuple[Destination, ...] = ()
    #: URL -> its destination, or why it is undeliverable; oldest first (see :func:`check`).
    _verdicts: dict[str, Destination | str] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> Allowlist:
        """Read ``callback_allowlist``: comma-separated; an entry with ``://`` is a URL prefix.

        Raises:
            ValueError: a prefix entry is not an http or https URL with a host.
        """
        entries = [part.strip() for part in text.split(",") if part.strip()]
        prefixes = []
        for entry in (e for e in entries if "://" in e):
            try:
                prefixes.append(Destination.parse(_with_path(entry)))
            except Undeliverable as exc:
                raise ValueError(f"{entry!r}: {exc}") from None
        return cls(hosts=tuple(e.lower() for e in entries if "://" not in e), prefixes=tuple(prefixes))

    def names(self, host: str, port: int | None) -> bool:
        """Whether the list names ``host``, by a host entry or a prefix's host."""
        host = host.lower()
        return any(_host_matches(entry, host, port) for entry in self.hosts) or any(
            prefix.host == host for prefix in self.prefixes
        )

    def allows(self, destination: Destination) -> bool:
        """Whether a callback may go to ``destination``; an empty list allows every host."""
        if not self.hosts and not self.prefixes:
            return True
        # Compared on the parsed form, so "http://allowed.example" cannot be followed by more
        # host text ("...example.evil.net", "...example@evil.net") and still match.
        where = destination.origin + destination.target
        if any(
            prefix.origin == destination.origin and where.startswith(prefix.origin + prefix.target)
            for prefix in self.prefixes
        ):
            return True
        return any(_host_matches(entry, destination.host, destination.port) for entry in self.hosts)


def check(allowlist: Allowlist, url: str) -> Destination:
    """The destination of a callback to ``url``; checked before the function is invoked.

    Host names are not resolved here (that would cost a lookup per message): the callbacks'
    :func:`guarded_resolver` refuses names that resolve to forbidden addresses. The verdict
    depends on nothing but the list and the URL, so the list remembers it for the last
    :data:`CHECKED_URLS` URLs.

    Raises:
        Undeliverable: not a URL that can be posted to, or not one that may be; says why.
    """
    verdicts = allowlist._verdicts
    verdict = verdicts.get(url)
    if verdict is None:
        try:
            verdict = _checked(allowlist, url)
        except Undeliverable as exc:
            verdict = str(exc)
        if len(verdicts) >= CHECKED_URLS:
            del verdicts[next(iter(verdicts))]
        verdicts[url] = verdict
    if isinstance(verdict, str):
        raise Undeliverable(verdict)
    return verdict


def _checked(allowlist: Allowlist, url: str) -> Destination:
    destination = Destination.parse(url)
    if not allowlist.allows(destination):
        raise Undeliverable("not in callback_allowlist")
    forbidden = is_forbidden(destination.host) or destination.host.rstrip(".") in METADATA_NAMES
    if forbidden and not allowlist.names(destination.host, destination.port):
        raise Undeliverable("a link-local or metadata address")
    return destination


def guard(allowlist: Allowlist, host: str, port: int, addresses: list[str]) -> list[str]:
    """The addresses a callback to ``host`` may connect to: all when the allow-list names the
    host, else those that are not link-local or metadata addresses.

    The check before invoking can be raced by DNS; this one applies to the very addresses the
    callback connects to.

    Raises:
        DestinationRefused: none is left.
    """
    if allowlist.names(host, port):
        return addresses
    allowed = [address for address in addresses if not is_forbidden(address)]
    if not allowed:
        raise DestinationRefused(f"{host} resolves only to link-local or metadata addresses")
    return allowed


def guarded_resolver(allowlist: Allowlist) -> Resolve:
    """Name resolution for callbacks that keeps to what :func:`guard` allows."""

    async def resolve(host: str, port: int) -> list[str]:
        answers = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return guard(allowlist, host, port, list(dict.fromkeys(str(answer[4][0]) for answer in answers)))

    return resolve
