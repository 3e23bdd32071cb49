"""What each command does, given the settings and the two things it talks to: NATS (queues,
call status, dead letters) and the worker's front door (a call's status, cancel)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamInfo
from tqdm import tqdm

from runtime import describe
from runtime.stream_state import dead_letter_count, oldest_age

from ..status.state import CallState
from ..worker import DEAD_LETTER_REASONS
from .config import Config
from .dead_letters import Choice, StoredDeadLetter, read, replay
from .output import age, emit_json, fields, since, table

#: Exit statuses: as sysexits.h has them, so scripts can tell "not there" from "cannot ask".
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 69
#: Seconds a command waits for NATS or the front door before it says it cannot reach them.
CONNECT_TIMEOUT_S = 5.0
#: Replays and purges of more letters than this show a progress bar (on a terminal).
PROGRESS_FROM = 20


class CommandError(Exception):
    """A command that cannot do what was asked; the message says what to do instead."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


@contextlib.asynccontextmanager
async def connected(config: Config) -> AsyncIterator[Client]:
    """A NATS connection made with the worker's own settings (servers, auth, TLS), closed after."""
    settings = config.settings

    async def quiet(exc: Exception) -> None:
        """nats-py would log each failed attempt; the one error below says it all."""

    try:
        # One try per server (nats-py counts the first connection as a reconnect), bounded
        # as a whole: an address that drops packets would otherwise be tried for a long while.
        client = await asyncio.wait_for(
            nats.connect(
                servers=list(settings.nats_servers),
                connect_timeout=CONNECT_TIMEOUT_S,
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                error_cb=quiet,
                name="queue-worker-cli",
                **settings.nats_auth.options,
            ),
            CONNECT_TIMEOUT_S * (1 + len(settings.nats_servers)),
        )
    except Exception as exc:  # nats-py raises OSError, TimeoutError or its own errors here
        servers = ", ".join(settings.nats_servers)
        if "authorization" in str(exc).lower():
            raise CommandError(
                f"NATS at {servers} refused the credentials of nats_auth={settings.nats_auth.mode}",
                EXIT_UNAVAILABLE,
            ) from None
        raise CommandError(
            f"cannot reach NATS at {servers} ({describe(exc)}): set nats_host and nats_port, or nats_url, "
            "to a server this machine reaches (kubectl -n openfaas port-forward svc/nats 4222)",
            EXIT_UNAVAILABLE,
        ) from None
    try:
        yield client
    finally:
        await client.close()


async def _jetstream(client: Client) -> JetStreamContext:
    js = client.jetstream()
    try:
        await js.account_info()
    except nats.js.errors.ServiceUnavailableError:
        raise CommandError(
            f"JetStream is not enabled on {client.connected_url.netloc if client.connected_url else 'the server'}: "
            "point nats_host at the NATS with JetStream the worker uses",
            EXIT_UNAVAILABLE,
        ) from None
    return js


# --- The front door: one call's status, cancel ------------------------------------------------


async def _front_door(config: Config, method: str, call_id: str) -> httpx.Response:
    credentials = config.worker.front_door_credentials
    url = f"{config.front_door}/async-function/{call_id}"
    try:
        async with httpx.AsyncClient(timeout=CONNECT_TIMEOUT_S, auth=credentials) as client:
            answer = await client.request(method, url)
    except httpx.HTTPError as exc:
        raise CommandError(
            f"cannot reach the front door at {config.front_door} ({describe(exc)}): set --url or QUEUE_WORKER_URL, "
            "or OPENFAAS_URL for the gateway in stack.yml",
            EXIT_UNAVAILABLE,
        ) from None
    if answer.status_code == 401:
        raise CommandError(
            "the front door wants the gateway's credentials: mount basic-auth-user and basic-auth-password "
            "in secret_mount_path (the worker has front_door_basic_auth on)"
        )
    if answer.status_code == 404:
        raise CommandError(
            f"no call {call_id}: unknown, or its status expired (call_status_ttl) or was pushed out by newer"
            " calls (call_status_max_calls)"
        )
    if answer.status_code == 503:
        raise CommandError(f"the worker cannot answer now: {answer.text}", EXIT_UNAVAILABLE)
    return answer


def _show_status(status: dict[str, Any]) -> None:
    shown: list[tuple[str, object]] = []
    for name in sorted(status):
        value = status[name]
        if name in ("updatedAt", "queuedAt", "nextAttemptAt") and isinstance(value, int | float):
            ago = since(value) or 0.0
            when = f"in {age(-ago)}" if ago < 0 else f"{age(ago)} ago"
            value = f"{datetime.fromtimestamp(value, UTC).isoformat(timespec='seconds')} ({when})"
        shown.append((name, value))
    fields(shown)


async def status(config: Config, args: argparse.Namespace) -> int:
    answer = await _front_door(config, "GET", args.call_id)
    if answer.status_code != 200:
        raise CommandError(f"the front door answered {answer.status_code}: {answer.text}")
    found: dict[str, Any] = answer.json()
    if args.json:
        emit_json(found)
    else:
        _show_status(found)
    return 0


async def cancel(config: Config, args: argparse.Namespace) -> int:
    answer = await _front_door(config, "DELETE", args.call_id)
    is_json = answer.headers.get("content-type", "").startswith("application/json")
    body: dict[str, Any] = answer.json() if is_json else {}
    if args.json and answer.status_code in (200, 202, 409):
        emit_json({"httpStatus": answer.status_code, **body})
    if answer.status_code == 409:
        raise CommandError(f"{args.call_id} has ended already: {body.get('state', 'finished')}")
    if answer.status_code not in (200, 202):
        raise CommandError(f"the front door answered {answer.status_code}: {answer.text}")
    if not args.json:
        if answer.status_code == 200:
            print(f"cancelled {args.call_id}: it waited for a retry; its callback has been posted")
        elif body.get("state") == CallState.RUNNING:
            print(f"cancel requested for {args.call_id}: the attempt under way finishes, and nothing runs after it")
        else:
            print(f"cancel requested for {args.call_id} ({body.get('state')}): it will not be invoked")
    return 0


# --- Calls: every status the bucket keeps -----------------------------------------------------


async def calls(config: Config, args: argparse.Namespace) -> int:
    states = {str(s) for s in CallState}
    unknown = sorted(set(args.state) - states)
    if unknown:
        raise CommandError(f"unknown state {', '.join(unknown)}; states: {', '.join(sorted(states))}", EXIT_USAGE)
    if config.worker.call_status_ttl_s <= 0:
        raise CommandError("call status is off (call_status_ttl=0s): there is nothing to list")
    bucket = config.worker.call_status_bucket
    async with connected(config) as client:
        js = await _jetstream(client)
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            raise CommandError(
                f"no call-status bucket {bucket}: nothing was queued through the front door yet, "
                "or call_status_bucket names another"
            ) from None
        watcher = await kv.watchall(ignore_deletes=True)
        found: list[dict[str, Any]] = []
        async for entry in watcher:
            if entry is None:
                break
            with contextlib.suppress(ValueError, TypeError):
                found.append(json.loads(entry.value or b""))
        await watcher.stop()  # type: ignore[no-untyped-call]  # unannotated in nats-py
    chosen = [
        c
        for c in found
        if (not args.state or c.get("state") in args.state)
        and (not args.function or c.get("function") in args.function)
    ]
    chosen.sort(key=lambda c: c.get("updatedAt") or 0, reverse=True)
    counts = Counter((str(c.get("function")), str(c.get("state"))) for c in chosen)
    if args.json:
        emit_json(
            {
                "counts": [{"function": f, "state": s, "calls": n} for (f, s), n in sorted(counts.items())],
                "calls": chosen[: args.limit],
            }
        )
        return 0
    table(("FUNCTION", "STATE", "CALLS"), ((f, s, n) for (f, s), n in sorted(counts.items())))
    print()
    table(
        ("CALL ID", "FUNCTION", "STATE", "ATTEMPT", "STATUS", "UPDATED"),
        (
            (
                c.get("callId"),
                c.get("function"),
                c.get("state"),
                c.get("attempt", c.get("attempts")),
                c.get("status", c.get("lastStatus")),
                age(since(c.get("updatedAt"))),
            )
            for c in chosen[: args.limit]
        ),
    )
    if len(chosen) > args.limit:
        print(f"({len(chosen) - args.limit} older calls not shown: --limit)", file=sys.stderr)
    return 0


# --- Queues ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueState:
    """One work-queue stream as ``queues`` reports it."""

    stream: str
    subjects: list[str]
    #: Stored and not finished: not delivered yet, running, or waiting for a retry.
    messages: int
    not_delivered: int
    #: Delivered and not acknowledged: running, or waiting for a retry.
    in_progress: int
    #: Delivered more than once and not acknowledged: the calls on a retry.
    retrying: int
    oldest_age_s: float
    consumers: list[str]
    dead_letters: int


async def _queue_state(js: JetStreamContext, info: StreamInfo, dead_letter_stream: str) -> QueueState:
    stream = str(info.config.name)
    consumers = await js.consumers_info(stream)
    subjects = list(info.config.subjects or ())
    dead = 0
    for subject in _queue_names(subjects):
        with contextlib.suppress(nats.errors.Error):
            dead += await dead_letter_count(js, dead_letter_stream, f"{dead_letter_stream}.{subject}")
    return QueueState(
        stream=stream,
        subjects=subjects,
        messages=info.state.messages,
        not_delivered=sum(c.num_pending or 0 for c in consumers),
        in_progress=sum(c.num_ack_pending or 0 for c in consumers),
        retrying=sum(c.num_redelivered or 0 for c in consumers),
        oldest_age_s=round(await oldest_age(js, stream, info.state.first_seq, info.state.messages), 3),
        consumers=[str(c.name) for c in consumers],
        dead_letters=dead,
    )


def _queue_names(subjects: list[str]) -> list[str]:
    """The queues a stream holds: its subjects but function mode's ``<queue_name>.>``."""
    return [subject for subject in subjects if not subject.endswith(".>")]


def _consumers(names: list[str]) -> str:
    """The queue's consumers, with function mode's (``<durable>_<name>_<namespace>``) counted."""
    per_function = [name for name in names if "_" in name]
    shown = ",".join(name for name in names if "_" not in name)
    return f"{shown} +{len(per_function)} per function" if per_function else shown


async def queues(config: Config, args: argparse.Namespace) -> int:
    async with connected(config) as client:
        js = await _jetstream(client)
        found = [
            await _queue_state(js, info, config.settings.dead_letter_stream)
            for info in await js.streams_info()
            if info.config.retention == RetentionPolicy.WORK_QUEUE
        ]
    if args.json:
        emit_json([asdict(q) for q in found])
        return 0
    if not found:
        print("no work-queue streams on this server: the worker creates its own at start", file=sys.stderr)
        return 0
    table(
        ("QUEUE", "STREAM", "DEPTH", "NOT DELIVERED", "IN PROGRESS", "RETRYING", "OLDEST", "CONSUMERS", "DEAD LETTERS"),
        (
            (
                ",".join(_queue_names(q.subjects)),
                q.stream,
                q.messages,
                q.not_delivered,
                q.in_progress,
                q.retrying,
                age(q.oldest_age_s) if q.messages else "-",
                _consumers(q.consumers),
                q.dead_letters,
            )
            for q in found
        ),
    )
    return 0


# --- Dead letters ------------------------------------------------------------------------------


def choice(args: argparse.Namespace) -> Choice:
    """The filters given, checked: an unknown reason is an error that lists the known ones."""
    unknown = sorted(set(args.reason) - set(DEAD_LETTER_REASONS))
    if unknown:
        raise CommandError(
            f"unknown reason {', '.join(unknown)}; reasons: {', '.join(sorted(DEAD_LETTER_REASONS))}", EXIT_USAGE
        )
    return Choice(args.function, args.call_id, args.reason, args.older_than, args.newer_than)


async def _letters(config: Config, js: JetStreamContext, chosen: Choice) -> tuple[list[StoredDeadLetter], int]:
    stream = config.settings.dead_letter_stream
    try:
        await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        raise CommandError(
            f"no dead-letter stream {stream}: nothing was dead-lettered yet (the worker creates it at start), "
            "or dead_letter_stream names another"
        ) from None
    letters = await read(js, stream, config.settings.dead_letter_subject)
    now = datetime.now(UTC)
    return [letter for letter in letters if chosen.holds(letter, now)], len(letters)


def _row(letter: StoredDeadLetter) -> tuple[object, ...]:
    detail = letter.detail
    return (
        letter.seq,
        letter.reason,
        detail.get("function"),
        detail.get("callId"),
        letter.attempts,
        detail.get("lastStatus"),
        age(since(letter.dead_at)),
        "yes" if letter.truncated else "",
    )


LETTER_COLUMNS = ("SEQ", "REASON", "FUNCTION", "CALL ID", "ATTEMPTS", "LAST STATUS", "AGE", "TRUNCATED")


def _show_letters(letters: list[StoredDeadLetter], as_json: bool) -> None:
    """Their summaries as JSON, or a table."""
    if as_json:
        emit_json([letter.summary() for letter in letters])
    else:
        table(LETTER_COLUMNS, (_row(letter) for letter in letters))


async def dead_letters_list(config: Config, args: argparse.Namespace) -> int:
    chosen = choice(args)
    async with connected(config) as client:
        letters, total = await _letters(config, await _jetstream(client), chosen)
    _show_letters(letters, args.json)
    print(f"{len(letters)} of {total} dead letters on {config.settings.dead_letter_subject}", file=sys.stderr)
    return 0


async def dead_letters_show(config: Config, args: argparse.Namespace) -> int:
    wanted = args.letter
    async with connected(config) as client:
        letters, _ = await _letters(config, await _jetstream(client), Choice())
    found = [letter for letter in letters if str(letter.seq) == wanted or letter.detail.get("callId") == wanted]
    if not found:
        subject = config.settings.dead_letter_subject
        raise CommandError(f"no dead letter with sequence or call id {wanted} on {subject}")
    for letter in found:
        summary = letter.summary()
        if args.json:
            emit_json({**summary, "message": letter.message.decode("utf-8", "replace")})
            continue
        shown: list[tuple[str, object]] = [
            (name, summary[name])
            for name in ("seq", "reason", "subject", "attempts", "publishedAt", "deadAt", "bytes", "truncated")
        ]
        shown.append(("why", DEAD_LETTER_REASONS.get(letter.reason)))
        shown += [(f"detail.{name}", value) for name, value in sorted(letter.detail.items())]
        shown.append(("message", letter.message[:2048].decode("utf-8", "replace")))
        fields(shown)
    return 0


async def dead_letters_act(config: Config, args: argparse.Namespace) -> int:
    """``replay`` and ``purge``: they need a filter or ``--all``, and ``--dry-run`` only says what."""
    chosen = choice(args)
    if chosen.everything and not args.all:
        raise CommandError(
            f"say which dead letters to {args.command}: --reason, --function, --call-id, --older-than, "
            "--newer-than, or --all",
            EXIT_USAGE,
        )
    stream = config.settings.dead_letter_stream
    async with connected(config) as client:
        js = await _jetstream(client)
        letters, total = await _letters(config, js, chosen)
        if args.command == "replay":
            skipped = [letter for letter in letters if letter.truncated]
            letters = [letter for letter in letters if not letter.truncated]
            for letter in skipped:
                print(f"skipped (cut to fit the payload limit): seq {letter.seq}", file=sys.stderr)
        verb = {"replay": "replayed", "purge": "purged"}[args.command]
        if args.dry_run:
            _show_letters(letters, args.json)
            print(f"would have {verb} {len(letters)} of {total} dead letters (dry run)", file=sys.stderr)
            return 0
        bar = tqdm(total=len(letters), unit="letter", disable=None if len(letters) >= PROGRESS_FROM else True)
        done = 0
        try:
            for letter in letters:
                if args.command == "replay":
                    await replay(js, stream, letter)
                else:
                    await js.delete_msg(stream, letter.seq)
                done += 1
                bar.update()
        finally:
            bar.close()
    if args.json:
        emit_json({verb: [letter.seq for letter in letters[:done]], "of": total})
    else:
        print(f"{verb} {done} of {total} dead letters on {config.settings.dead_letter_subject}")
    return 0
