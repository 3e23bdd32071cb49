"""Fixtures shared by every test folder.

The queue-worker folder is imported as the package ``function``, as it is in the image. Tests
that need real parts get one nats-server per test process, fresh stream names per test, HTTP
servers on loopback for the gateway and the callback receiver, and worker processes, each
stopped when its test ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from runtime.loader import import_package

ROOT = Path(__file__).resolve().parent.parent
import_package(ROOT / "queue-worker")

import nats  # noqa: E402
import nats.errors  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from nats.aio.client import Client  # noqa: E402

from harness.natsd import NatsServer  # noqa: E402
from harness.servers import RecordingServer  # noqa: E402
from harness.shrinkwrap import shrinkwrap  # noqa: E402
from harness.worker import WorkerProcess  # noqa: E402
from tests.support import DEAD_LETTER_STREAM, Queue, RunCli, WorkerFactory  # noqa: E402


def pytest_sessionstart(session: pytest.Session) -> None:
    # Only the controlling process starts a fresh fault report; xdist workers append to it.
    if not hasattr(session.config, "workerinput"):
        from tests.faults.workload import REPORT

        REPORT.unlink(missing_ok=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    # Kept on the test, so a fixture's teardown can tell whether the test itself failed.
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[CALL_FAILED] = report.failed
    return report


#: Whether the test's own call failed (set once it has run).
CALL_FAILED = pytest.StashKey[bool]()
#: How much of each worker's log a failed test shows.
LOG_TAIL_CHARS = 20_000


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.faults.workload import REPORT

    if not REPORT.exists():
        return
    rows = [json.loads(line) for line in REPORT.read_text().splitlines() if line.strip()]
    terminalreporter.section("faults: every request invoked to success or dead-lettered")
    columns = ("fault", "published", "invoked", "invocations", "dead_lettered", "duplicated")
    terminalreporter.write_line(f"{columns[0]:<34}" + "".join(f"{c:>14}" for c in columns[1:]) + "  other")
    for row in sorted(rows, key=lambda r: str(r["fault"])):
        other = ", ".join(f"{k}={v}" for k, v in row.items() if k not in columns)
        terminalreporter.write_line(
            f"{row['fault']:<34}" + "".join(f"{row[c]:>14}" for c in columns[1:]) + f"  {other}"
        )


@pytest.fixture(scope="session")
def natsd() -> Iterator[NatsServer]:
    server = NatsServer().start()
    yield server
    server.close()


@pytest.fixture
def private_natsd() -> Iterator[NatsServer]:
    """A nats-server of the test's own, for tests that stop or restart it."""
    server = NatsServer().start()
    yield server
    server.close()


@pytest.fixture
def queue() -> Queue:
    tag = uuid.uuid4().hex[:10]
    return Queue(stream=f"q-{tag}", subject=f"q-{tag}", durable=f"w-{tag}")


#: Longest a test's NATS client may take to close; a client stuck reconnecting must not hang teardown.
CLOSE_TIMEOUT_S = 5.0


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Connect clients of the test's own (to a private server or a cluster); all closed afterwards."""
    clients: list[Client] = []

    async def open_client(servers: str | list[str], **options: Any) -> Client:
        client = await nats.connect(servers, max_reconnect_attempts=-1, reconnect_time_wait=0.2, **options)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await _close(client)


@pytest.fixture
async def nc(natsd: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(natsd.url)
    yield client
    await _close(client)


async def _close(client: Client) -> None:
    with contextlib.suppress(TimeoutError, nats.errors.Error):
        await asyncio.wait_for(client.close(), CLOSE_TIMEOUT_S)


@pytest.fixture
async def gateway() -> AsyncIterator[RecordingServer]:
    server = await RecordingServer().start()
    yield server
    await server.close()


@pytest.fixture
async def receiver() -> AsyncIterator[RecordingServer]:
    server = await RecordingServer().start()
    yield server
    await server.close()


@pytest.fixture
def start_worker(
    request: pytest.FixtureRequest, natsd: NatsServer, queue: Queue, gateway: RecordingServer
) -> Iterator[WorkerFactory]:
    """Start a worker bound to this test's queue; every worker started is stopped afterwards,
    and, when the test failed, the end of its log is shown with the failure."""
    started: list[WorkerProcess] = []

    def start(handler_dir: Path | None = None, **env: str) -> WorkerProcess:
        settings = {
            "nats_url": natsd.url,
            "gateway_url": gateway.url,
            "ack_wait": "5s",
            "fetch_wait": "250ms",
            "initial_retry_wait": "50ms",
            "max_retry_wait": "400ms",
            # The one dead-letter stream the tests read, for the probe handler as for the worker.
            "dead_letter_stream": "faas-dead-letter",
            **queue.env(),
            **env,
        }
        worker = WorkerProcess(settings) if handler_dir is None else WorkerProcess(settings, handler_dir=handler_dir)
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        if request.node.stash.get(CALL_FAILED, False):
            print(f"--- worker log, last {LOG_TAIL_CHARS} characters ---\n{worker.log_text()[-LOG_TAIL_CHARS:]}")
        worker.close()


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """A CA (``nats-ca.crt``), a server certificate for 127.0.0.1 and a client certificate,
    made by openssl."""
    folder = tmp_path / "certs"
    folder.mkdir()

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "nats-ca.crt", "-days", "1",
        "-subj", "/CN=queue-worker test CA")  # fmt: skip
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    (folder / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")  # fmt: skip
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "nats-ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.crt", "-days", "1", "-extfile", f"{name}.ext")  # fmt: skip
    return folder


@pytest.fixture(scope="session")
def image_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``function/bin/queue-worker`` in the build context, laid out as in the image."""
    stack = yaml.safe_load((ROOT / "stack.yml").read_text())
    context = shrinkwrap(
        ROOT, "queue-worker", stack["functions"]["queue-worker"], build_dir=tmp_path_factory.mktemp("b")
    )
    return context / "function" / "bin" / "queue-worker"


@pytest.fixture
def cli(image_bin: Path, natsd: NatsServer, queue: Queue, tmp_path: Path) -> RunCli:
    """Runs the command with a stack file naming this test's queue; NATS comes from the
    environment (``NATS_URL``, expanded in the stack as faas-cli would)."""
    stack = {
        "version": 1.0,
        "provider": {"name": "openfaas", "gateway": "http://127.0.0.1:8080"},
        "functions": {
            "queue-worker": {
                "lang": "python3-jetstream",
                "handler": "./queue-worker",
                "environment": {
                    "nats_url": "${NATS_URL:-nats://nats.openfaas:4222}",
                    **queue.env(),
                    "dead_letter_stream": DEAD_LETTER_STREAM,
                    "call_status_ttl": "1h",
                },
            }
        },
    }
    (tmp_path / "stack.yml").write_text(yaml.safe_dump(stack))

    def run(
        *args: str, env: dict[str, str] | None = None, stderr: int | None = subprocess.PIPE
    ) -> subprocess.CompletedProcess[str]:
        environ = {"PATH": os.environ["PATH"], "NATS_URL": natsd.url, **(env or {})}
        return subprocess.run(
            [sys.executable, str(image_bin), *args],
            env=environ,
            cwd=tmp_path,  # ./stack.yml is read without --stack
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=60,
        )

    return run
