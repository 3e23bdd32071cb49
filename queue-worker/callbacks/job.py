"""A callback that failed, queued as a job of its own so it is retried without invoking again.

The job travels on the work queue, marked by the :data:`JOB_HEADER` header, and carries the
function's result, so a retry (or a replay from the dead-letter stream) only posts it again.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass

import pybase64

from ..invoke import Invocation
from ..status.state import CallState
from ..transport import Response
from ..wire.queue_request import DecodeError
from .post import CallbackInfo

#: NATS header that marks a message as a job of this worker rather than a queued request.
JOB_HEADER = "Queue-Worker-Job"
#: Its value for a callback job.
CALLBACK = "callback"


@dataclass(frozen=True, slots=True)
class CallbackJob:
    """Everything needed to post a callback again."""

    url: str
    invocation: Invocation
    info: CallbackInfo
    #: Where the result's body is kept when it is too large to travel in the job (see
    #: :mod:`.results`); the job then carries no body.
    body_ref: str = ""
    #: The attempt's ``traceparent`` when it was traced, so the retries of the post join its trace.
    traceparent: str = ""

    def encode(self) -> bytes:
        """The job as JSON; the body is base64 so any bytes survive."""
        body = b"" if self.body_ref else self.invocation.response.body
        return json.dumps(
            {
                "url": self.url,
                "status": self.invocation.status,
                "headers": [list(pair) for pair in self.invocation.response.headers],
                "body": pybase64.b64encode_as_string(body),
                "bodyRef": self.body_ref,
                "durationSeconds": self.invocation.duration_s,
                "error": self.invocation.error,
                "callId": self.info.call_id,
                "function": self.info.function,
                "retries": self.info.retries,
                "maxRetries": self.info.max_retries,
                "state": self.info.state or "",
                "traceparent": self.traceparent,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> CallbackJob:
        """Read a job back.

        Raises:
            DecodeError: the job is not what :meth:`encode` writes.
        """
        try:
            doc = json.loads(data)
            response = Response(
                status=int(doc["status"]),
                headers=tuple((str(k), str(v)) for k, v in doc["headers"]),
                body=pybase64.b64decode(doc["body"], validate=True),
            )
            invocation = Invocation(response, float(doc["durationSeconds"]), str(doc.get("error", "")))
            info = CallbackInfo(
                call_id=str(doc["callId"]),
                function=str(doc["function"]),
                retries=int(doc["retries"]),
                max_retries=int(doc["maxRetries"]),
                state=CallState(doc["state"]) if doc.get("state") else None,
            )
            return cls(
                url=str(doc["url"]),
                invocation=invocation,
                info=info,
                body_ref=str(doc.get("bodyRef") or ""),
                traceparent=str(doc.get("traceparent") or ""),
            )
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError) as exc:
            raise DecodeError("callback_job", f"not a callback job ({exc!r})") from exc
