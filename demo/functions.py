"""Sample functions behind a stand-in for the gateway's ``/function/<name>`` route."""

from __future__ import annotations

import asyncio
import random

from aiohttp import web

from harness.servers import Behaviour, answer


async def figlet(request: web.Request, body: bytes) -> web.Response:
    """Answer at once with the text shouted back."""
    return web.Response(text=body.decode(errors="replace").upper(), content_type="text/plain")


async def sleep(request: web.Request, body: bytes) -> web.Response:
    """Take 50-300 ms, like a function doing real work."""
    await asyncio.sleep(random.uniform(0.05, 0.3))
    return web.Response(text="slept", content_type="text/plain")


def flaky() -> Behaviour:
    """Answer 503 to the first call for each call id, then 200: retried with back-off."""
    seen: set[str] = set()

    async def behaviour(request: web.Request, body: bytes) -> web.Response:
        call_id = request.headers.get("X-Call-Id", "")
        if call_id not in seen:
            seen.add(call_id)
            return web.Response(status=503, text="warming up", headers={"Retry-After": "0"})
        return web.Response(text="ok now", content_type="text/plain")

    return behaviour


def behaviours() -> dict[str, Behaviour]:
    """Sample functions by name."""
    # "missing" answers 404 like a function that does not exist: not retried, posted to the callback.
    return {"figlet": figlet, "sleep": sleep, "flaky": flaky(), "missing": answer(404, "function not found")}
