"""Where callbacks may go: an allow-list of hosts and URL prefixes, and never to metadata services.

Callers choose callback URLs, so without a guard the worker would POST wherever they say: to
internal services, or to a cloud's metadata endpoint. With ``callback_allowlist`` set, only the
hosts (``receiver.openfaas-fn``, ``*.example.com``, ``host:8080``) and URL prefixes
(``https://hooks.example.com/queue/``) it lists are allowed. Whatever the list, link-local and
metadata addresses are refused unless their host is allowed by name: checked before the
function is invoked, and again on the addresses a callback connects to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from .origin_client import Resolve

#: Never a callback's destination unless allowed by name: link-local (where cloud metadata lives).
FORBIDDEN_NETWORKS = (
    ipaddress.ip_network("169.254.0.0/16"),
    ipaddress.ip_network("fe80::/10"),
    ipaddress.ip_network("fd00:ec2::254/128"),
)


def is_forbidden(address: str) -> bool:
    """Whether an IP address is link-local or a metadata service's."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in FORBIDDEN_NETWORKS)


def _host_matches(entry: str, host: str, port: int | None) -> bool:
    name, _, entry_port = entry.partition(":")
    if entry_port and (port is None or entry_port != str(port)):
        return False
    return host == name or (name.startswith("*.") and host.endswith(name[1:]))


def _with_path(url: str) -> str:
    """``https://h`` as ``https://h/``, so a prefix ``https://h/`` matches it and not ``https://h.evil``."""
    return url if urlsplit(url).path else url + "/"


@dataclass(frozen=True, slots=True)
class Allowlist:
    """Hosts (``name``, ``*.suffix``, ``name:port``) and URL prefixes callbacks may go to."""

    hosts: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Allowlist:
        """Read ``callback_allowlist``: comma-separated; an entry with ``://`` is a URL prefix."""
        entries = [part.strip() for part in text.split(",") if part.strip()]
        return cls(
            hosts=tuple(e.lower() for e in entries if "://" not in e),
            prefixes=tuple(_with_path(e) for e in entries if "://" in e),
        )

    def names(self, host: str, port: int | None) -> bool:
        """Whether the list names ``host``, by a host entry or a prefix's host."""
        host = host.lower()
        return any(_host_matches(entry, host, port) for entry in self.hosts) or any(
            urlsplit(prefix).hostname == host for prefix in self.prefixes
        )

    def allows(self, url: str) -> bool:
        """Whether a callback may go to ``url``; an empty list allows every host."""
        if not self.hosts and not self.prefixes:
            return True
        if any(_with_path(url).startswith(prefix) for prefix in self.prefixes):
            return True
        parts = urlsplit(url)
        return parts.hostname is not None and any(
            _host_matches(entry, parts.hostname.lower(), parts.port) for entry in self.hosts
        )


class CallbackRefused(OSError):
    """A callback's destination is not allowed."""


def refusal(allowlist: Allowlist, url: str) -> str | None:
    """Why a callback may not go to ``url``, or ``None``; checked before the function is invoked.

    Host names are not resolved here (that would cost a lookup per message): the callbacks'
    :func:`guarded_resolver` refuses names that resolve to forbidden addresses.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http or https URL"
    if not allowlist.allows(url):
        return "not in callback_allowlist"
    if is_forbidden(parts.hostname) and not allowlist.names(parts.hostname, parts.port):
        return "a link-local or metadata address"
    return None


def guard(allowlist: Allowlist, host: str, port: int, addresses: list[str]) -> list[str]:
    """The addresses a callback to ``host`` may connect to: all when the allow-list names the
    host, else those that are not link-local or metadata addresses.

    The check before invoking can be raced by DNS; this one applies to the very addresses the
    callback connects to.

    Raises:
        CallbackRefused: none is left.
    """
    if allowlist.names(host, port):
        return addresses
    allowed = [address for address in addresses if not is_forbidden(address)]
    if not allowed:
        raise CallbackRefused(f"{host} resolves only to link-local or metadata addresses")
    return allowed


def guarded_resolver(allowlist: Allowlist) -> Resolve:
    """Name resolution for callbacks that keeps to what :func:`guard` allows."""

    async def resolve(host: str, port: int) -> list[str]:
        answers = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return guard(allowlist, host, port, list(dict.fromkeys(str(answer[4][0]) for answer in answers)))

    return resolve
