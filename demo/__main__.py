"""Run the demo: start everything on free loopback ports, publish a batch, report, stop."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter

import nats

from demo.functions import behaviours
from harness.natsd import NatsServer
from harness.publish import QueueRequest, encode, parse
from harness.servers import RecordingServer
from harness.worker import WorkerProcess

#: Requests per sample function.
MIX = {"figlet": 40, "sleep": 30, "flaky": 20, "missing": 10}
DEADLINE_S = 60.0


async def run() -> int:
    natsd = NatsServer().start()
    gateway = await RecordingServer(behaviours=behaviours()).start()
    receiver = await RecordingServer().start()
    worker = WorkerProcess(
        {
            "nats_url": natsd.url,
            "gateway_url": gateway.url,
            "max_inflight": "20",
            "initial_retry_wait": "200ms",
            "max_retry_wait": "2s",
        }
    ).start()
    try:
        print(f"nats-server   {natsd.url} (JetStream, store {natsd.store})")
        print(f"functions     {gateway.url}/function/{{{','.join(MIX)}}}")
        print(f"callbacks     {receiver.url}/done")
        print(f"worker        probes :{worker.port}, metrics :{worker.metrics_port}/metrics")
        await worker.wait_ready()
        return await _exercise(natsd, gateway, receiver, worker)
    finally:
        worker.close()
        await gateway.close()
        await receiver.close()
        natsd.close()


async def _exercise(
    natsd: NatsServer, gateway: RecordingServer, receiver: RecordingServer, worker: WorkerProcess
) -> int:
    nc = await nats.connect(natsd.url)
    total = sum(MIX.values())
    started = time.monotonic()
    callback = parse(f"{receiver.url}/done")
    for function, count in MIX.items():
        for _ in range(count):
            call_id = str(uuid.uuid4())
            request = QueueRequest(
                function=function,
                body=f"hello from {call_id[:8]}".encode(),
                header={
                    "X-Call-Id": (call_id,),
                    "X-Start-Time": (str(time.time_ns()),),
                    "X-Callback-Url": (f"{receiver.url}/done",),
                    "Content-Type": ("text/plain",),
                },
                callback=callback,
            )
            await nc.jetstream().publish("faas-request", encode(request))
    print(f"\npublished     {total} requests to faas-request in the gateway's format")
    # Redraw one line on a terminal; elsewhere (CI logs) print a line per update.
    end = "" if sys.stdout.isatty() else "\n"
    start = "\r" if sys.stdout.isatty() else ""
    while len(receiver.calls) < total and time.monotonic() - started < DEADLINE_S:
        await asyncio.sleep(0.25)
        done, calls = len(receiver.calls), len(gateway.calls)
        print(f"{start}progress      {done}/{total} callbacks, {calls} invocations", end=end)
    elapsed = time.monotonic() - started
    await nc.close()
    statuses = Counter(call.header("X-Function-Status") for call in receiver.calls)
    invoked = Counter(call.path_qs.split("/")[2] for call in gateway.calls)
    print("\nsummary")
    print(f"  requests      {total}")
    by_function = ", ".join(f"{name} {n}" for name, n in sorted(invoked.items()))
    by_status = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
    print(f"  invocations   {len(gateway.calls)}  {by_function}")
    print(f"  callbacks     {len(receiver.calls)}  by status {by_status}")
    print(f"  retried       {len(gateway.calls) - total} (flaky answers 503 once per call)")
    print(f"  elapsed       {elapsed:.2f}s")
    if len(receiver.calls) != total:
        print(f"\nFAILED: {total - len(receiver.calls)} callbacks missing; worker log:\n{worker.log_text()[-3000:]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(run()))
