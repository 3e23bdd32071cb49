"""Every Go-encoded vector, through JetStream and a running worker, to the function and callback."""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from harness.servers import RecordingServer, wait_until
from tests.fixtures_io import load_vectors
from tests.support import Queue, WorkerFactory, create_stream, wait_for_empty

pytestmark = pytest.mark.e2e
VECTORS = load_vectors()


async def test_each_vector_makes_exactly_the_call_and_callback_go_means(
    nc: Client, queue: Queue, gateway: RecordingServer, receiver: RecordingServer, start_worker: WorkerFactory
) -> None:
    # Given every vector on the stream, with callbacks pointed at the local receiver
    await create_stream(nc, queue)
    for vector in VECTORS:
        message = vector.message
        if vector.callback_url is not None:
            # Only the host changes: path, escaping, query and fragment stay exactly as Go wrote them.
            message = message.replace(b'"Scheme":"https"', b'"Scheme":"http"')
            for host in (b"receiver.openfaas-fn:8080", b"cb.example.com:8443"):
                message = message.replace(b'"Host":"' + host + b'"', f'"Host":"127.0.0.1:{receiver.port}"'.encode())
        await nc.jetstream().publish(queue.subject, message)

    # When a worker consumes them
    worker = start_worker()
    await worker.wait_ready()
    await gateway.wait_for(len(VECTORS))
    expected_callbacks = [v for v in VECTORS if v.callback_url]
    await receiver.wait_for(len(expected_callbacks))
    await wait_until(lambda: len(worker.events("Posted result")) == len(expected_callbacks), 10, "callback logs")

    # Then each call lands at its invoke path with its body and headers
    for vector in VECTORS:
        calls = [c for c in gateway.calls if c.path_qs == vector.invoke_path and c.body == vector.body]
        assert calls, f"{vector.name}: no call at {vector.invoke_path}"
        stored = vector.fields["message"].get("Header") or {}
        for name, values in stored.items():
            assert calls[0].header_values(name) == values, f"{vector.name}: header {name}"
        assert calls[0].method == vector.fields["message"].get("Method", "POST")

    # And each callback goes to the path, query and fragment-less target Go's URL.String() gives
    for vector in expected_callbacks:
        assert vector.callback_url is not None
        path_qs = "/" + vector.callback_url.split("/", 3)[3].split("#")[0]
        matching = [c for c in receiver.calls if c.path_qs == path_qs]
        assert len(matching) == 1, f"{vector.name}: callbacks to {path_qs}: {[c.path_qs for c in receiver.calls]}"
        assert matching[0].header("X-Function-Name") == vector.function
        assert matching[0].header("X-Function-Status") == "200"
        assert matching[0].body == vector.body
        if vector.call_id:
            assert matching[0].header("X-Call-Id") == vector.call_id

    assert len(gateway.calls) == len(VECTORS)
    await wait_for_empty(nc, queue)
