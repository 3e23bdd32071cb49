"""Authenticated and encrypted NATS: each mode connects, bad credentials fail start-up at once."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from typing import Any

import nats
import nkeys
import pytest

from harness.natsd import NatsServer
from harness.publish import publish_request
from harness.servers import RecordingServer
from harness.worker import WorkerProcess
from tests.e2e.nats_jwt import decentralised
from tests.support import Queue, WorkerFactory, queued, wait_for_empty

pytestmark = pytest.mark.e2e


def _server(tmp_path: Path, config: str) -> NatsServer:
    (tmp_path / "nats.conf").write_text(config)
    return NatsServer(extra_args=("-c", str(tmp_path / "nats.conf")))


def _nkey_pair() -> tuple[str, str]:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    return seed.decode(), nkeys.from_seed(seed).public_key.decode()


SEED, PUBLIC = _nkey_pair()
JWT = decentralised()
#: Mode, server configuration, the worker's secret files, and how a test client connects.
MODES: dict[str, tuple[str, dict[str, str], dict[str, Any]]] = {
    "userpass": (
        'authorization { user: "qw", password: "s3cret-pass" }',
        {"nats-user": "qw", "nats-password": "s3cret-pass"},
        {"user": "qw", "password": "s3cret-pass"},
    ),
    "token": ('authorization { token: "s3cret-token" }', {"nats-token": "s3cret-token"}, {"token": "s3cret-token"}),
    "nkey": (
        f'authorization {{ users: [ {{ nkey: "{PUBLIC}" }} ] }}',
        {"nats-nkey-seed": SEED},
        {"nkeys_seed_str": SEED},
    ),
    "creds": (JWT.server_config, {"nats.creds": JWT.creds}, {"user_credentials": "nats.creds"}),
}


async def _round_trip(worker: WorkerProcess, url: str, queue: Queue, client_options: dict[str, Any]) -> None:
    await worker.wait_ready()
    nc = await nats.connect(url, **client_options)
    try:
        await publish_request(nc, queue.subject, queued("figlet", "secure-1"))
        await wait_for_empty(nc, queue)
    finally:
        await nc.close()


@pytest.mark.parametrize("mode", sorted(MODES))
async def test_each_auth_mode_connects_with_secrets_from_files(
    mode: str, tmp_path: Path, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    config, secrets, client_options = MODES[mode]
    for name, value in secrets.items():
        (tmp_path / name).write_text(value + "\n")
    if "user_credentials" in client_options:
        client_options = {"user_credentials": str(tmp_path / client_options["user_credentials"])}
    natsd = _server(tmp_path, config).start()
    try:
        worker = start_worker(nats_url=natsd.url, nats_auth=mode, secret_mount_path=str(tmp_path))
        await _round_trip(worker, natsd.url, queue, client_options)
        assert [c.header("X-Call-Id") for c in gateway.calls] == ["secure-1"]
        assert all(line not in worker.log_text() for value in secrets.values() for line in value.splitlines() if line)
    finally:
        natsd.close()


async def test_wrong_credentials_fail_start_up_with_one_line(tmp_path: Path, start_worker: WorkerFactory) -> None:
    (tmp_path / "nats-user").write_text("qw")
    (tmp_path / "nats-password").write_text("wrong-password")
    natsd = _server(tmp_path, MODES["userpass"][0]).start()
    try:
        worker = start_worker(nats_url=natsd.url, nats_auth="userpass", secret_mount_path=str(tmp_path))

        assert await asyncio.to_thread(worker.process.wait, 20) == 78  # type: ignore[union-attr]
        [line] = worker.events("Invalid configuration")
        assert line["variable"] == "nats_auth"
        assert "refused" in line["error"]
        assert "wrong-password" not in worker.log_text()
    finally:
        natsd.close()


async def test_a_missing_secret_fails_start_up_naming_it(tmp_path: Path, start_worker: WorkerFactory) -> None:
    worker = start_worker(nats_auth="token", secret_mount_path=str(tmp_path))

    assert await asyncio.to_thread(worker.process.wait, 20) == 78  # type: ignore[union-attr]
    assert "nats_auth" in worker.log_text()
    assert "nats-token" in worker.log_text()


def _verifying_tls(certificates: Path) -> str:
    """A server configuration with TLS that also verifies client certificates."""
    return (
        f'tls {{ cert_file: "{certificates}/server.crt", key_file: "{certificates}/server.key", '
        f'ca_file: "{certificates}/nats-ca.crt", verify: true }}'
    )


async def test_tls_with_a_ca_bundle_and_a_client_certificate(
    certificates: Path, tmp_path: Path, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory
) -> None:
    config = _verifying_tls(certificates)
    natsd = _server(tmp_path, config).start()
    try:
        url = f"tls://127.0.0.1:{natsd.port}"
        worker = start_worker(
            nats_url=url,
            secret_mount_path=str(certificates),
            nats_tls_ca="nats-ca.crt",
            nats_tls_cert="client.crt",
            nats_tls_key="client.key",
        )
        client_tls = ssl.create_default_context(cafile=str(certificates / "nats-ca.crt"))
        client_tls.load_cert_chain(str(certificates / "client.crt"), str(certificates / "client.key"))
        await _round_trip(worker, url, queue, {"tls": client_tls})
        assert len(gateway.calls) == 1
        assert worker.events("Connecting to NATS")[0]["tls"] is True
    finally:
        natsd.close()


async def test_tls_without_a_client_certificate_is_refused_by_a_verifying_server(
    certificates: Path, tmp_path: Path, start_worker: WorkerFactory
) -> None:
    config = _verifying_tls(certificates)
    natsd = _server(tmp_path, config).start()
    try:
        worker = start_worker(
            nats_url=f"tls://127.0.0.1:{natsd.port}", secret_mount_path=str(certificates), nats_tls_ca="nats-ca.crt"
        )
        with pytest.raises(RuntimeError, match="not ready"):
            await worker.wait_ready(timeout_s=3)
        assert worker.events("NATS connection error")
    finally:
        natsd.close()
