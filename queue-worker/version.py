"""The queue-worker's version, the one place it is written."""

VERSION = "0.1.0"
#: Sent as ``User-Agent`` on invocations, callbacks and the gateway checks.
USER_AGENT = f"queue-worker/{VERSION}"
