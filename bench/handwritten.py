"""The baseline: a minimal hand-written pull -> HTTP POST (aiohttp) -> ack loop.

What any careful engineer would write in an afternoon, with the same concurrency and the same
message format as the worker, and nothing else: no retries, metrics or logs; a result is posted
to ``X-Callback-Url`` when the call names one. Run as
``python -m bench.handwritten`` with ``nats_url``, ``nats_stream``, ``nats_durable``,
``gateway_url`` and ``max_inflight`` in the environment.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os

import aiohttp
import nats
import nats.errors
import uvloop
from nats.aio.msg import Msg


async def main() -> None:
    env = os.environ  # the worker's own lower-case names, so both run from one environment
    inflight = int(env["max_inflight"])
    nc = await nats.connect(env["nats_url"])
    sub = await nc.jetstream().pull_subscribe_bind(durable=env["nats_durable"], stream=env["nats_stream"])
    gateway = env["gateway_url"]
    tasks: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=inflight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def handle(msg: Msg) -> None:
            request = json.loads(msg.data)
            headers = {k: v[0] for k, v in (request.get("Header") or {}).items()}
            body = base64.b64decode(request.get("Body") or "")
            url = f"{gateway}/function/{request['Function']}{request.get('Path') or '/'}"
            async with session.post(url, data=body, headers=headers) as response:
                result = await response.read()
            callback = headers.get("X-Callback-Url")
            if callback:
                posted_headers = {"X-Call-Id": headers.get("X-Call-Id", ""), "X-Function-Status": str(response.status)}
                async with session.post(callback, data=result, headers=posted_headers) as posted:
                    await posted.read()
            await msg.ack()

        while True:
            free = inflight - len(tasks)
            if free == 0:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                messages = await sub.fetch(batch=free, timeout=1)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for msg in messages:
                task = asyncio.create_task(handle(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)


if __name__ == "__main__":
    uvloop.run(main())
