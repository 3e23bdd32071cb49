"""A nats-server on a host of the test's own: a network namespace reached over a veth pair, so
a test can partition the worker from NATS for real and heal it again.

``cut()`` puts a ``blackhole`` queueing discipline on both ends of the pair: every packet either
way is dropped silently, as in a real partition (no reset, no unreachable: the connections stay
half-open until someone notices). ``heal()`` removes it. The namespace, the pair and the server
go with ``close()``. Needs root and iproute2 (``ip``, ``tc``), as CI and these machines have.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass, field

from .natsd import NatsServer


def _run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


@dataclass
class PartitionedNats:
    """One nats-server in namespace ``qw-<tag>`` at ``10.251.<n>.2``; this host is ``.1``."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    server: NatsServer | None = None

    @property
    def namespace(self) -> str:
        return f"qw-{self.tag}"

    @property
    def _host_if(self) -> str:
        return f"qwh{self.tag}"

    @property
    def _ns_if(self) -> str:
        return f"qwn{self.tag}"

    @property
    def _subnet(self) -> str:
        # A /30 per namespace, from the tag, so parallel tests do not collide.
        return f"10.251.{int(self.tag[:2], 16)}.{(int(self.tag[2:4], 16) % 64) * 4}"

    def _address(self, last: int) -> str:
        network, _, base = self._subnet.rpartition(".")
        return f"{network}.{int(base) + last}"

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    def start(self) -> PartitionedNats:
        """Make the namespace and the pair, then start the server inside and wait for it."""
        ns, host_if, ns_if = self.namespace, self._host_if, self._ns_if
        _run("ip", "netns", "add", ns)
        try:
            _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            _run("ip", "link", "set", ns_if, "netns", ns)
            _run("ip", "addr", "add", f"{self._address(1)}/30", "dev", host_if)
            _run("ip", "link", "set", host_if, "up")
            _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self._address(2)}/30", "dev", ns_if)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            self.server = NatsServer(host=self._address(2), prefix=("ip", "netns", "exec", ns)).start()
        except BaseException:
            self.close()
            raise
        return self

    def cut(self) -> None:
        """Drop every packet both ways from now on."""
        _run("tc", "qdisc", "add", "dev", self._host_if, "root", "blackhole")
        _run("ip", "netns", "exec", self.namespace, "tc", "qdisc", "add", "dev", self._ns_if, "root", "blackhole")

    def heal(self) -> None:
        """Let packets through again."""
        _run("tc", "qdisc", "del", "dev", self._host_if, "root")
        _run("ip", "netns", "exec", self.namespace, "tc", "qdisc", "del", "dev", self._ns_if, "root")

    def close(self) -> None:
        """Stop the server, then remove the pair and the namespace."""
        if self.server is not None:
            self.server.close()
            self.server = None
        subprocess.run(["ip", "link", "del", self._host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
