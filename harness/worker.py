"""Run the queue-worker as the image does (``python index.py``), configured by environment."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .ports import free_port
from .processes import kill, stop

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template" / "python3-jetstream"
HANDLER = ROOT / "queue-worker"


@dataclass
class WorkerProcess:
    """One worker process; its JSON log lines are kept in a file and readable as dicts."""

    env: Mapping[str, str]
    #: The function folder; ``None`` leaves it to the runtime (``function/`` beside index.py).
    handler_dir: Path | None = HANDLER
    #: The interpreter and folder to run ``index.py`` with, for a build context of its own.
    python: str = sys.executable
    cwd: Path | None = None
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    log_path: Path = field(default_factory=lambda: Path(tempfile.mkstemp(prefix="worker-", suffix=".log")[1]))
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        """Start the process (not waiting for readiness)."""
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")},
            "log_encoding": "json",
            "port": str(self.port),
            "metrics_port": str(self.metrics_port),
            **self.env,
        }
        index = TEMPLATE / "index.py"
        if self.cwd is not None:
            index = self.cwd / "index.py"
            self.handler_dir = None
        if self.handler_dir is not None:
            env["handler_dir"] = str(self.handler_dir)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.python, str(index)], env=env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
            )
        return self

    async def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Wait until ``/_/ready`` answers 200; raise with the log if the process dies or stalls."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.process is None or self.process.poll() is not None:
                    break
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/_/ready")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"worker not ready:\n{self.log_text()}")

    async def get(self, path: str, *, metrics: bool = False) -> httpx.Response:
        """GET a path on the worker's ``port`` (or ``metrics_port``)."""
        port = self.metrics_port if metrics else self.port
        async with httpx.AsyncClient() as client:
            return await client.get(f"http://127.0.0.1:{port}{path}")

    def log_text(self) -> str:
        """Everything the process wrote."""
        return self.log_path.read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The JSON log lines, optionally only those whose ``msg`` is ``name``."""
        lines = []
        for line in self.log_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and (name is None or record.get("msg") == name):
                lines.append(record)
        return lines

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout_s)

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        kill(self.process)

    def close(self) -> None:
        """Stop the process whatever its state and remove the log."""
        stop(self.process)
        self.log_path.unlink(missing_ok=True)
