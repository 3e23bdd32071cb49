"""The ``queue-worker`` command as an operator runs it: a subprocess of the image's
``function/bin/queue-worker`` (from the build context faas-cli would send), settings from a
stack file with the environment winning, a real nats-server and the worker's real front door."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import struct
import subprocess
import termios
from pathlib import Path

import httpx
import pytest
import yaml
from aiohttp import web
from nats.aio.client import Client

from harness.natsd import NatsServer
from harness.publish import QueueRequest, publish_request
from harness.servers import RecordingServer, answer, wait_until
from harness.worker import ROOT
from tests.support import DEAD_LETTER_STREAM, Queue, RunCli, WorkerFactory, dead_letters

pytestmark = pytest.mark.e2e


async def call(run: RunCli, *args: str, **options: object) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run, *args, **options)


def _error(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failing command writes."""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


async def test_status_and_cancel_through_the_front_door(
    queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory, cli: RunCli
) -> None:
    gateway.behaviours["down"] = answer(503)
    worker = start_worker(initial_retry_wait="30s", max_retry_wait="30s", call_status_ttl="1h")
    await worker.wait_ready()
    url = f"http://127.0.0.1:{worker.port}"
    async with httpx.AsyncClient() as client:
        queued = await client.post(f"{url}/async-function/down", content=b"x", headers={"X-Callback-Url": receiver.url})
    call_id = queued.headers["X-Call-Id"]
    await wait_until(lambda: len(gateway.calls_to("down")) == 1, 10, "first attempt")
    await asyncio.sleep(0.3)  # the waiting status is written after the attempt

    shown = await call(cli, "--url", url, "status", call_id)
    as_json = await call(cli, "--url", url, "status", call_id, "--json")
    cancelled = await call(cli, "--url", url, "cancel", call_id)
    again = await call(cli, "--url", url, "cancel", call_id)
    unknown = await call(cli, "--url", url, "status", "no-such-call")
    unreachable = await call(cli, "--url", "http://127.0.0.1:1", "status", call_id)

    assert shown.returncode == 0, shown.stderr
    assert dict(line.split(":", 1) for line in shown.stdout.splitlines())["state"].strip() == "waiting"
    assert "(in " in shown.stdout  # the next attempt is in the future
    assert json.loads(as_json.stdout)["lastStatus"] == 503
    assert (cancelled.returncode, cancelled.stdout.split(":")[0]) == (0, f"cancelled {call_id}")
    await receiver.wait_for(1)
    assert again.returncode == 1
    assert _error(again) == f"error: {call_id} has ended already: cancelled"
    assert (unknown.returncode, _error(unknown)) == (
        1,
        "error: no call no-such-call: unknown, or its status expired (call_status_ttl) or was pushed out by newer"
        " calls (call_status_max_calls)",
    )
    assert unreachable.returncode == 69
    assert "cannot reach the front door at http://127.0.0.1:1" in _error(unreachable)


async def test_cancel_of_a_running_call_says_what_will_happen(
    gateway: RecordingServer, start_worker: WorkerFactory, cli: RunCli
) -> None:
    gateway.behaviours["slow"] = answer(200, "done", after_s=5.0)  # long past the command's start-up
    worker = start_worker(call_status_ttl="1h")
    await worker.wait_ready()
    url = f"http://127.0.0.1:{worker.port}"
    async with httpx.AsyncClient() as client:
        call_id = (await client.post(f"{url}/async-function/slow", content=b"x")).headers["X-Call-Id"]
        # The status says running a quarter of a second after the call starts; it runs for five.
        for _ in range(100):
            if (await client.get(f"{url}/async-function/{call_id}")).json()["state"] == "running":
                break
            await asyncio.sleep(0.02)

    requested = await call(cli, "--url", url, "cancel", call_id, "--json")

    assert requested.returncode == 0, requested.stderr
    body = json.loads(requested.stdout)
    assert (body["httpStatus"], body["state"], body["cancelRequested"]) == (202, "running", True)


async def test_calls_counts_by_function_and_state(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory, cli: RunCli
) -> None:
    gateway.behaviours["down"] = answer(503)
    # A bucket of this test's own: the session's NATS keeps every other test's calls too.
    bucket = {"call_status_bucket": f"calls-{queue.stream}"}
    worker = start_worker(initial_retry_wait="30s", max_retry_wait="30s", call_status_ttl="1h", **bucket)
    await worker.wait_ready()
    url = f"http://127.0.0.1:{worker.port}"
    async with httpx.AsyncClient() as client:
        for function in ("echo", "echo", "down"):
            assert (await client.post(f"{url}/async-function/{function}", content=b"x")).status_code == 202
    await wait_until(lambda: len(gateway.calls) == 3, 10, "three invocations")
    await asyncio.sleep(0.5)

    table = await call(cli, "calls", env=bucket)
    waiting = await call(cli, "calls", "--state", "waiting", "--json", env=bucket)
    bogus = await call(cli, "calls", "--state", "stuck", env=bucket)

    assert table.returncode == 0, table.stderr
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows[:3] == [["FUNCTION", "STATE", "CALLS"], ["down", "waiting", "1"], ["echo", "succeeded", "2"]]
    listed = json.loads(waiting.stdout)
    assert listed["counts"] == [{"function": "down", "state": "waiting", "calls": 1}]
    assert [c["function"] for c in listed["calls"]] == ["down"]
    assert bogus.returncode == 2
    assert "unknown state stuck; states: cancelled, dead-lettered, failed, queued, running" in _error(bogus)


async def test_queues_shows_depth_work_in_progress_consumers_and_dead_letters(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory, cli: RunCli
) -> None:
    gateway.behaviours["down"] = answer(503)
    gateway.behaviours["gone"] = answer(404)
    worker = start_worker(initial_retry_wait="30s", max_retry_wait="30s")
    await worker.wait_ready()
    await publish_request(nc, queue.subject, QueueRequest(function="down", header={"X-Call-Id": ("d-1",)}))
    await publish_request(nc, queue.subject, QueueRequest(function="gone", header={"X-Call-Id": ("g-1",)}))
    await nc.jetstream().publish(queue.subject, b"{not json")
    await wait_until(lambda: len(worker.events("Dead-lettered")) == 1, 10, "the undecodable one dead")

    listed = await call(cli, "queues", "--json")
    table = await call(cli, "queues")

    assert listed.returncode == 0, listed.stderr
    [ours] = [q for q in json.loads(listed.stdout) if q["stream"] == queue.stream]
    # The plain subject, and function mode's per-function ones (which the table leaves out).
    assert ours["subjects"] == [queue.subject, f"{queue.subject}.>"]
    assert (ours["messages"], ours["in_progress"], ours["consumers"], ours["dead_letters"]) == (
        1,
        1,
        [queue.durable],
        1,
    )
    assert ours["oldest_age_s"] > 0
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["QUEUE", "STREAM", "DEPTH"]
    assert any(row.split()[:3] == [queue.subject, queue.stream, "1"] for row in rows)


async def test_dead_letters_list_show_replay_and_purge(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory, cli: RunCli
) -> None:
    gateway.behaviours["gone"] = answer(404, "no such thing")
    worker = start_worker(max_retry_attempts="1", retry_http_codes="404")
    await worker.wait_ready()
    for call_id in ("keep-1", "replay-1", "purge-1"):
        await publish_request(nc, queue.subject, QueueRequest(function="gone", header={"X-Call-Id": (call_id,)}))
    await wait_until(lambda: len(worker.events("Dead-lettered")) == 3, 10, "three dead letters")

    listed = await call(cli, "dead-letters", "list")
    as_json = await call(cli, "dead-letters", "list", "--json", "--reason", "exhausted", "--older-than", "0s")
    newer = await call(cli, "dead-letters", "list", "--json", "--older-than", "1h")
    shown = await call(cli, "dead-letters", "show", "replay-1")
    dry = await call(cli, "dead-letters", "replay", "--call-id", "replay-1", "--dry-run")
    dry_json = await call(cli, "dead-letters", "purge", "--reason", "exhausted", "--dry-run", "--json")
    assert len(await dead_letters(nc, queue)) == 3
    replayed = await call(cli, "dead-letters", "replay", "--call-id", "replay-1")
    unbounded = await call(cli, "dead-letters", "purge")
    purged = await call(cli, "dead-letters", "purge", "--call-id", "purge-1")
    bogus = await call(cli, "dead-letters", "list", "--reason", "tired")

    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[:2] == ["SEQ", "REASON"]
    assert sorted(row.split()[3] for row in rows) == ["keep-1", "purge-1", "replay-1"]
    assert listed.stderr.strip() == f"3 of 3 dead letters on {DEAD_LETTER_STREAM}.{queue.subject}"
    assert {letter["detail"]["lastStatus"] for letter in json.loads(as_json.stdout)} == {404}
    assert json.loads(newer.stdout) == []
    shown_fields = dict(line.split(":", 1) for line in shown.stdout.splitlines())
    assert shown_fields["detail.callId"].strip() == "replay-1"
    assert shown_fields["why"].strip().startswith("failed max_retry_attempts times")
    assert "would have replayed 1 of 3 dead letters (dry run)" in dry.stderr
    assert len(json.loads(dry_json.stdout)) == 3  # listed, not purged
    assert replayed.stdout.strip() == f"replayed 1 of 3 dead letters on {DEAD_LETTER_STREAM}.{queue.subject}"
    # The replayed call runs again (and, still gone, is dead again); the others stay where they were.
    await wait_until(lambda: len(worker.events("Dead-lettered")) == 4, 10, "replayed request dead again")
    assert [e["callId"] for e in worker.events("Invoked")].count("replay-1") == 2
    assert unbounded.returncode == 2
    assert "say which dead letters to purge" in _error(unbounded)
    assert purged.returncode == 0, purged.stderr
    assert sorted(letter.detail["callId"] for letter in await dead_letters(nc, queue)) == ["keep-1", "replay-1"]
    assert bogus.returncode == 2
    assert "unknown reason tired; reasons: callback, callback_refused, exhausted, expired" in _error(bogus)


async def test_a_long_replay_shows_a_progress_bar_on_a_terminal(
    nc: Client, queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory, cli: RunCli
) -> None:
    worker = start_worker()
    await worker.wait_ready()
    for _ in range(25):
        await nc.jetstream().publish(queue.subject, b"{not json")
    await wait_until(lambda: len(worker.events("Dead-lettered")) == 25, 10, "25 dead letters")
    worker.close()  # so what is replayed stays queued
    controller, terminal = pty.openpty()
    # A new terminal is 0 columns wide; an operator's is wider.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        replayed = await call(cli, "dead-letters", "replay", "--all", stderr=terminal)
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal side is closed: everything has been read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)

    assert replayed.returncode == 0
    assert "replayed 25 of 25" in replayed.stdout
    assert b"100%" in shown
    assert b"25/25" in shown
    assert await dead_letters(nc, queue) == []


async def test_errors_say_what_to_change(natsd: NatsServer, queue: Queue, cli: RunCli, tmp_path: Path) -> None:
    without_jetstream = NatsServer(jetstream=False).start()
    try:
        unreachable = await call(cli, "queues", env={"NATS_URL": "nats://127.0.0.1:1"})
        no_jetstream = await call(cli, "queues", env={"NATS_URL": without_jetstream.url})
    finally:
        without_jetstream.close()
    no_stream = await call(cli, "dead-letters", "list", env={"dead_letter_stream": "never-made"})
    bad_setting = await call(cli, "queues", env={"max_inflight": "lots"})
    no_function = await call(cli, "-f", "figlet", "queues")
    no_status = await call(cli, "calls", env={"call_status_bucket": "never-made"})

    assert unreachable.returncode == 69
    assert "cannot reach NATS at nats://127.0.0.1:1" in _error(unreachable)
    assert "set nats_host and nats_port, or nats_url" in _error(unreachable)
    assert no_jetstream.returncode == 69
    assert "JetStream is not enabled on" in _error(no_jetstream)
    assert no_stream.returncode == 1
    assert "no dead-letter stream never-made" in _error(no_stream)
    assert bad_setting.returncode == 78
    assert _error(bad_setting).startswith("error: invalid setting max_inflight='lots'")
    assert no_function.returncode == 78
    assert "no function 'figlet'; it has queue-worker" in _error(no_function)
    assert no_status.returncode == 1
    assert "no call-status bucket never-made" in _error(no_status)


def test_make_install_puts_the_command_in_the_venv() -> None:
    installed = ROOT / ".venv" / "bin" / "queue-worker"
    assert installed.exists(), "make install writes .venv/bin/queue-worker"
    shown = subprocess.run([str(installed), "--help"], capture_output=True, text=True, timeout=30, check=True)
    assert "dead-letters" in shown.stdout


async def test_the_stack_files_gateway_is_the_front_door_unless_told(
    queue: Queue, gateway: RecordingServer, start_worker: WorkerFactory, cli: RunCli, tmp_path: Path
) -> None:
    # The gateway of stack.yml, as OPENFAAS_URL sets it: /function/queue-worker/async-function/<id>
    # reaches the worker's front door there. A recording server stands in for the gateway.
    stack = yaml.safe_load((tmp_path / "stack.yml").read_text())
    stack["provider"]["gateway"] = "${OPENFAAS_URL:-http://127.0.0.1:8080}"
    (tmp_path / "stack.yml").write_text(yaml.safe_dump(stack))
    gateway.behaviours["queue-worker"] = lambda request, body: _json({"callId": "c-1", "state": "queued"})

    shown = await call(cli, "status", "c-1", "--json", env={"OPENFAAS_URL": gateway.url})

    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["state"] == "queued"
    [asked] = gateway.calls_to("queue-worker")
    assert asked.path_qs == "/function/queue-worker/async-function/c-1"


async def _json(body: dict[str, str]) -> web.Response:
    return web.json_response(body)
