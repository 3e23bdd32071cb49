"""Run a real Prometheus (Debian's ``prometheus`` package) that scrapes given targets on loopback."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from .ports import free_port
from .processes import stop

START_TIMEOUT_S = 30.0


@dataclass
class Prometheus:
    """One Prometheus process with its own TSDB in a temporary folder, removed on close."""

    targets: list[str]
    scrape_interval: str = "1s"
    #: Scrape jobs to use instead of one static job for ``targets``.
    scrape_configs: list[dict[str, Any]] | None = None
    port: int = field(default_factory=free_port)
    home: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="prometheus-")))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The HTTP API's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        """Start and wait until it answers ready; raise with its log if it does not."""
        binary = shutil.which("prometheus")
        if binary is None:
            raise FileNotFoundError("prometheus not found: apt-get install prometheus")
        config = {
            "global": {"scrape_interval": self.scrape_interval, "evaluation_interval": self.scrape_interval},
            "scrape_configs": self.scrape_configs
            or [{"job_name": "queue-worker", "static_configs": [{"targets": self.targets}]}],
        }
        (self.home / "prometheus.yml").write_text(yaml.safe_dump(config))
        with open(self.home / "prometheus.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.home / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.home / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        output = (self.home / "prometheus.log").read_text(errors="replace")
        self.close()
        raise RuntimeError(f"prometheus did not become ready:\n{output}")

    async def query(self, expr: str) -> dict[str, Any]:
        """Run an instant query; returns the API's whole answer (``status``, ``data``, ``error``)."""
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.url}/api/v1/query", params={"query": expr})
        answer: dict[str, Any] = response.json()
        return answer

    def close(self) -> None:
        """Stop the process and remove its data."""
        stop(self.process)
        shutil.rmtree(self.home, ignore_errors=True)
