"""What call status costs nats-server in memory: every kept key holds an entry in the stream's
subject index for as long as it is kept, so memory grows with the calls a bucket keeps, not
with its bytes on disk. ``python -m bench.status_memory`` (about two minutes) measures, on a
nats-server of its own for each case:

- memory per kept key, in a bucket with no cap, file and memory storage;
- a bucket made as the worker makes it (``ensure_bucket``, capped at ``CAP`` calls) after
  three times as many writes: the server's memory levels off.

Writes are plain publishes of a typical ``succeeded`` value to a new key each, as the worker
makes them. Memory is nats-server's RSS 20 s after the last write, against before the first.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time

import nats
from nats.js.api import KeyValueConfig, StorageType

from bench.proc import rss_mb
from harness.natsd import NatsServer
from harness.worker import HANDLER
from runtime.loader import PACKAGE, import_package

import_package(HANDLER, PACKAGE)
from function.status.store import ensure_bucket  # noqa: E402

BUCKET = "queue-worker-calls"
KEYS = 500_000
CAP = 100_000
SETTLE_S = 20.0
VALUE = json.dumps(
    {"callId": "x" * 36, "function": "figlet", "state": "succeeded", "updatedAt": time.time(), "status": 200,
     "durationMs": 12.5, "attempt": 1}, separators=(",", ":")
).encode()  # fmt: skip


async def _fill(bucket: str, storage: StorageType | None, keys: int, cap: int | None) -> dict[str, float]:
    natsd = NatsServer().start()
    try:
        assert natsd.process is not None
        nc = await nats.connect(natsd.url)
        if cap is None:
            await nc.jetstream().create_key_value(KeyValueConfig(bucket=bucket, ttl=86400, storage=storage))
        else:
            await ensure_bucket(nc, bucket, 86400, 1, cap)
        await asyncio.sleep(1.0)
        before = rss_mb(natsd.process.pid)
        for i in range(keys):
            key = base64.urlsafe_b64encode(os.urandom(27)).decode()
            await nc.publish(f"$KV.{bucket}.{key}", VALUE)
            if i % 1000 == 999:
                await nc.flush()
        await nc.flush()
        await asyncio.sleep(SETTLE_S)
        after = rss_mb(natsd.process.pid)
        kept = (await nc.jetstream().stream_info(f"KV_{bucket}")).state.messages
        await nc.close()
        return {
            "keys_written": keys,
            "keys_kept": kept,
            "rss_before_mb": round(before, 1),
            "rss_after_mb": round(after, 1),
            "bytes_per_kept_key": round((after - before) * 1024 * 1024 / kept),
        }
    finally:
        natsd.close()


async def main() -> dict[str, dict[str, float]]:
    results = {
        "file, no cap": await _fill(BUCKET, StorageType.FILE, KEYS, None),
        "memory, no cap": await _fill(BUCKET, StorageType.MEMORY, KEYS, None),
        f"file, capped at {CAP:,} (the worker's bucket)": await _fill(BUCKET, None, 3 * CAP, CAP),
    }
    for name, figures in results.items():
        print(f"{name}: {figures}", flush=True)
    return results


if __name__ == "__main__":
    asyncio.run(main())
