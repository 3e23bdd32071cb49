"""List dead letters and replay chosen ones onto the work queue.

In the image (``kubectl exec deploy/queue-worker -- ...``) or from a checkout
(``make dead-letters ARGS="..."``), with the worker's own environment::

    python -m function.dead_letter_tool list [--function F] [--call-id ID] [--reason R] [--json]
    python -m function.dead_letter_tool replay (--all | --function F | --call-id ID ...) [--reason R]

Replaying publishes the original message, byte for byte and with its headers, to the subject it
came from, then deletes the dead letter, so each one is replayed once. A replayed request starts
its attempts afresh; a replayed callback job only posts the callback again. A letter whose
message was cut to fit the server's payload limit is listed but never replayed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import nats
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from runtime import EXIT_CONFIG, ConfigError, Settings
from runtime.dead_letters import ATTEMPTS, DEAD_AT, DETAIL, HEADERS, PUBLISHED_AT, REASON, SUBJECT, TRUNCATED

#: Headers not carried over on replay: a deduplication id would make the stream drop the replay.
NOT_REPLAYED = frozenset({"nats-msg-id"})


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    """One dead letter and its place in the dead-letter stream."""

    seq: int
    headers: Mapping[str, str]
    message: bytes

    @property
    def reason(self) -> str:
        return self.headers.get(REASON, "")

    @property
    def attempts(self) -> int:
        return int(self.headers.get(ATTEMPTS, "0"))

    @property
    def detail(self) -> dict[str, Any]:
        """What the worker recorded: callId, function, lastStatus, lastBody, ..."""
        detail: dict[str, Any] = json.loads(self.headers.get(DETAIL, "{}"))
        return detail

    @property
    def original_headers(self) -> dict[str, str]:
        headers: dict[str, str] = json.loads(self.headers.get(HEADERS, "{}"))
        return headers

    @property
    def truncated(self) -> bool:
        return TRUNCATED in self.headers

    def matches(self, *, functions: Sequence[str], call_ids: Sequence[str], reasons: Sequence[str]) -> bool:
        """Whether every given filter holds (an empty filter holds for all)."""
        return (
            (not functions or self.detail.get("function") in functions)
            and (not call_ids or self.detail.get("callId") in call_ids)
            and (not reasons or self.reason in reasons)
        )

    def summary(self) -> dict[str, Any]:
        """Everything but the message itself, for ``list --json``."""
        return {
            "seq": self.seq,
            "reason": self.reason,
            "subject": self.headers.get(SUBJECT),
            "attempts": self.attempts,
            "publishedAt": self.headers.get(PUBLISHED_AT),
            "deadAt": self.headers.get(DEAD_AT),
            "detail": self.detail,
            "headers": self.original_headers,
            "bytes": int(self.headers.get(TRUNCATED, len(self.message))),
            "truncated": self.truncated,
        }


async def read(js: JetStreamContext, stream: str, subject: str) -> list[StoredDeadLetter]:
    """Every dead letter on ``subject``, oldest first."""
    letters: list[StoredDeadLetter] = []
    seq = 1
    while True:
        try:
            raw = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except NotFoundError:
            return letters
        if raw.seq is None:
            return letters
        letters.append(StoredDeadLetter(raw.seq, dict(raw.headers or {}), raw.data or b""))
        seq = raw.seq + 1


async def replay(js: JetStreamContext, stream: str, letter: StoredDeadLetter) -> None:
    """Publish the original message where it came from, then delete the dead letter."""
    headers = {k: v for k, v in letter.original_headers.items() if k.lower() not in NOT_REPLAYED}
    await js.publish(letter.headers[SUBJECT], letter.message, headers=headers or None)
    await js.delete_msg(stream, letter.seq)


def _line(letter: StoredDeadLetter) -> str:
    d = letter.detail
    fields = [
        f"seq={letter.seq}",
        f"reason={letter.reason}",
        f"function={d.get('function', '-')}",
        f"callId={d.get('callId') or '-'}",
        f"attempts={letter.attempts}",
        f"lastStatus={d.get('lastStatus', '-')}",
        f"deadAt={letter.headers.get(DEAD_AT)}",
    ]
    return " ".join(fields) + (" truncated" if letter.truncated else "")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m function.dead_letter_tool", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("list", "replay"):
        command = commands.add_parser(name)
        command.add_argument("--function", action="append", default=[], help="only this function (repeatable)")
        command.add_argument("--call-id", action="append", default=[], help="only this X-Call-Id (repeatable)")
        command.add_argument("--reason", action="append", default=[], help="undecodable, expired, exhausted, callback")
        if name == "list":
            command.add_argument("--json", action="store_true", help="print each dead letter as JSON")
        else:
            command.add_argument("--all", action="store_true", help="replay every dead letter of this queue")
    return parser


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Carry out one command; returns the exit status."""
    if args.command == "replay" and not (args.all or args.function or args.call_id or args.reason):
        print("error: say what to replay: --all, --function, --call-id or --reason", file=sys.stderr)
        return 2
    client = await nats.connect(servers=list(settings.nats_servers), connect_timeout=5, max_reconnect_attempts=1)
    try:
        js = client.jetstream()
        letters = await read(js, settings.dead_letter_stream, settings.dead_letter_subject)
        chosen = [
            letter
            for letter in letters
            if letter.matches(functions=args.function, call_ids=args.call_id, reasons=args.reason)
        ]
        for letter in chosen:
            if args.command == "list":
                print(json.dumps(letter.summary()) if args.json else _line(letter))
            elif letter.truncated:
                print(f"skipped, cut to fit the payload limit: {_line(letter)}")
            else:
                await replay(js, settings.dead_letter_stream, letter)
                print(f"replayed {_line(letter)}")
        print(f"{len(chosen)} of {len(letters)} dead letters on {settings.dead_letter_subject}", file=sys.stderr)
        return 0
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, read the worker's settings from the environment, and run."""
    args = _parser().parse_args(argv)
    try:
        from .handler import ENV_DEFAULTS  # the worker's own queue, unless the environment names one

        settings = Settings.from_env({**ENV_DEFAULTS, **os.environ})
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return asyncio.run(run(args, settings))


if __name__ == "__main__":
    sys.exit(main())
