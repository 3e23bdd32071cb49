"""``queue-worker``: the operator's command-line tool for calls, queues and dead letters.

It reads the worker's settings from ``stack.yml`` (``--stack``, or ``./stack.yml`` when there is
one; ``--function`` picks the function), with the environment winning, as in the worker's pod:
``nats_host=127.0.0.1 queue-worker queues``. It talks to NATS for queues, calls and dead
letters, and to the worker's front door (the gateway's ``/function/<name>`` from stack.yml, or
``--url``) for one call's status and cancel.

Exit statuses: 0 done; 1 not there or not possible (an unknown call, one that ended); 2 a usage
error; 69 NATS or the front door cannot be reached; 78 a setting is invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any

from runtime import EXIT_CONFIG, ConfigError
from runtime.durations import parse_duration

from ..worker import DEAD_LETTER_REASONS
from . import commands
from .commands import CommandError
from .config import Config, StackError, load

Command = Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]]


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a Go duration such as 90s, 15m or 2h, not {text!r}") from None


def _letter_filters(parser: argparse.ArgumentParser) -> None:
    reasons = ", ".join(sorted(DEAD_LETTER_REASONS))
    parser.add_argument("--reason", action="append", default=[], help=f"one of {reasons}")
    parser.add_argument("--function", dest="function", action="append", default=[], help="only this function")
    parser.add_argument("--call-id", action="append", default=[], help="only this X-Call-Id")
    parser.add_argument("--older-than", type=_duration, help="dead for at least this long (Go duration)")
    parser.add_argument("--newer-than", type=_duration, help="dead for at most this long (Go duration)")


def parser() -> argparse.ArgumentParser:
    """Every command and option (``queue-worker --help``)."""
    root = argparse.ArgumentParser(
        prog="queue-worker",
        description="Look after the queue-worker's calls, queues and dead letters.",
        epilog="Settings come from stack.yml, then the environment (nats_host, nats_port, queue_name, ...).",
    )
    root.add_argument("--stack", type=Path, help="the stack file (default: ./stack.yml when there is one)")
    root.add_argument("-f", "--function", dest="stack_function", metavar="NAME", help="the function in the stack file")
    root.add_argument("--url", help="the worker's front door (default: <gateway>/function/<function>)")
    root.add_argument("--json", action="store_true", help="JSON for scripts instead of tables")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # --json after the command too (queue-worker queues --json), without undoing one given before it.
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON instead of tables")

    def add(name: str, run: Command, text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=text, description=text, parents=[shared])
        command.set_defaults(run=run)
        return command

    add("status", commands.status, "one call's status").add_argument("call_id")
    add("cancel", commands.cancel, "cancel a call that has not finished").add_argument("call_id")
    calls = add("calls", commands.calls, "recent calls, counted by function and state")
    calls.add_argument("--state", action="append", default=[], help="only calls in this state")
    calls.add_argument("--function", dest="function", action="append", default=[], help="only this function")
    calls.add_argument("--limit", type=int, default=20, help="most recent calls listed (default 20)")
    add("queues", commands.queues, "depth, work in progress, oldest request and consumers of every queue")

    letters = add("dead-letters", commands.dead_letters_list, "list, show, replay or purge dead letters")
    actions = letters.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="dead letters, oldest first", parents=[shared])
    listing.set_defaults(run=commands.dead_letters_list, command="list")
    _letter_filters(listing)
    show = actions.add_parser("show", help="one dead letter in full, by sequence or call id", parents=[shared])
    show.set_defaults(run=commands.dead_letters_show, command="show")
    show.add_argument("letter", help="its SEQ (from list) or call id")
    for name, text in (("replay", "queue them again where they came from"), ("purge", "delete them for good")):
        action = actions.add_parser(name, help=text, description=text, parents=[shared])
        action.set_defaults(run=commands.dead_letters_act, command=name)
        _letter_filters(action)
        action.add_argument("--all", action="store_true", help=f"{name} every dead letter of this queue")
        action.add_argument("--dry-run", action="store_true", help=f"list what would be {name}d; change nothing")
    return root


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run one command; returns the exit status. Errors are one line on stderr."""
    args = parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    stack = args.stack
    if stack is None and Path("stack.yml").is_file():
        stack = Path("stack.yml")
    try:
        config = load(stack, args.stack_function, args.url, environ)
    except StackError as exc:
        print(f"error: {stack}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    run: Command = args.run
    try:
        return asyncio.run(run(config, args))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
