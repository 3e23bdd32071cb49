"""Dead letters: what cannot be done is kept, with why, and can be replayed."""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from aiohttp import web
from nats.aio.client import Client

from function.dead_letter_tool import run
from function.handler import ENV_DEFAULTS
from harness.natsd import NatsServer
from harness.publish import QueueRequest, encode, publish_request
from harness.servers import RecordingServer, answer, wait_until
from harness.shrinkwrap import shrinkwrap
from harness.worker import ROOT
from runtime import Settings
from tests.support import Queue, WorkerFactory, create_stream, dead_letters, wait_for_empty

pytestmark = pytest.mark.e2e


async def test_exhausted_undecodable_and_expired_messages_are_kept_and_replay_brings_them_back(
    natsd: NatsServer,
    nc: Client,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
    start_worker: WorkerFactory,
) -> None:
    healthy = False

    async def unstable(request: web.Request, body: bytes) -> web.Response:
        return web.Response(text="fine") if healthy else web.Response(status=500, text="database down")

    gateway.behaviours["unstable"] = unstable
    await create_stream(nc, queue)
    old = QueueRequest(function="echo", body=b"stale", header={"X-Call-Id": ("old-1",)})
    await publish_request(nc, queue.subject, old)
    await asyncio.sleep(1.2)  # older than max_message_age before any worker sees it

    worker = start_worker(max_message_age="1s", max_retry_attempts="2")
    await worker.wait_ready()
    await nc.jetstream().publish(queue.subject, b"{not json")
    failing = QueueRequest(
        function="unstable",
        body=b"payload",
        header={"X-Call-Id": ("ex-1",), "X-Callback-Url": (receiver.url + "/cb",)},
    )
    await publish_request(nc, queue.subject, failing)

    await wait_until(lambda: len(worker.events("Dead-lettered")) == 3, 10, "three dead letters")
    await wait_for_empty(nc, queue)
    letters = {letter.reason: letter for letter in await dead_letters(nc, queue)}
    assert set(letters) == {"expired", "undecodable", "exhausted"}
    exhausted = letters["exhausted"]
    assert exhausted.attempts == 2
    assert exhausted.detail == {
        "callId": "ex-1",
        "function": "unstable",
        "lastStatus": 500,
        "lastBody": "database down",
        "lastError": "",
    }
    assert exhausted.message == encode(failing)
    assert letters["expired"].detail["callId"] == "old-1"
    assert letters["undecodable"].message == b"{not json"
    # The last failure was posted to the callback as well.
    [callback] = receiver.calls
    assert (callback.header("X-Function-Status"), callback.header("X-Retry")) == ("500", "1")

    # When the function is healthy again, replaying every dead letter finishes what can be finished.
    healthy = True
    settings = Settings.from_env({**ENV_DEFAULTS, "nats_url": natsd.url, **queue.env()})
    replay_all = argparse.Namespace(command="replay", all=True, function=[], call_id=[], reason=[])
    assert await run(replay_all, settings) == 0

    await receiver.wait_for(2)
    await wait_until(lambda: len(worker.events("Dead-lettered")) == 4, 10, "undecodable dead again")
    await wait_for_empty(nc, queue)
    assert receiver.calls[1].header("X-Function-Status") == "200"
    assert [c.body for c in gateway.calls_to("echo")] == [b"stale"]
    assert [letter.reason for letter in await dead_letters(nc, queue)] == ["undecodable"]


async def test_the_command_lists_and_replays_by_call_id(
    natsd: NatsServer,
    nc: Client,
    queue: Queue,
    gateway: RecordingServer,
    start_worker: WorkerFactory,
    tmp_path: Path,
) -> None:
    gateway.behaviours["gone"] = answer(404)
    worker = start_worker(max_retry_attempts="1", retry_http_codes="404")
    await worker.wait_ready()
    for call_id in ("keep-1", "replay-1"):
        await publish_request(nc, queue.subject, QueueRequest(function="gone", header={"X-Call-Id": (call_id,)}))
    await wait_until(lambda: len(worker.events("Dead-lettered")) == 2, 10, "two dead letters")
    command = [sys.executable, "-m", "function.dead_letter_tool"]
    env = {"nats_url": natsd.url, "queue_name": queue.subject, "PATH": ""}
    # Run it as in the image: from the build context, the handler being the package `function`.
    stack = yaml.safe_load((ROOT / "stack.yml").read_text())
    cwd = shrinkwrap(ROOT, "queue-worker", stack["functions"]["queue-worker"], build_dir=tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=30)

    listed = await asyncio.to_thread(cli, "list", "--json")
    replayed = await asyncio.to_thread(cli, "replay", "--call-id", "replay-1")

    assert listed.returncode == 0, listed.stderr
    assert sorted(json.loads(line)["detail"]["callId"] for line in listed.stdout.splitlines()) == ["keep-1", "replay-1"]
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed" in replayed.stdout
    assert "callId=replay-1" in replayed.stdout
    await wait_until(lambda: len(worker.events("Dead-lettered")) == 3, 10, "replayed request dead again")
    remaining = [letter.detail["callId"] for letter in await dead_letters(nc, queue)]
    assert sorted(remaining) == ["keep-1", "replay-1"]
    assert [e["callId"] for e in worker.events("Invoked")].count("replay-1") == 2
