"""The command-line tool's settings: stack files read as faas-cli reads them, the environment
winning; and the dead-letter reasons it accepts are every reason the code can give."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from function.cli.config import StackError, expand, load, stack_function
from function.worker import DEAD_LETTER_REASONS
from harness.worker import ROOT

NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
VALUES = st.text(alphabet=st.characters(exclude_characters="}$", exclude_categories=["Cs"]), max_size=10)


@given(name=NAMES, value=st.one_of(st.none(), VALUES), default=VALUES)
def test_variables_expand_as_envsubst_does(name: str, value: str | None, default: str) -> None:
    environ = {} if value is None else {name: value}

    assert expand(f"a${{{name}}}b", environ) == f"a{value or ''}b"
    assert expand(f"${{{name}:-{default}}}", environ) == (value if value else default)
    assert expand(f"${{{name}-{default}}}", environ) == (default if value is None else value)


def test_the_repositorys_stack_gives_the_workers_settings_with_the_environment_winning() -> None:
    config = load(ROOT / "stack.yml", None, None, {"NATS_HOST": "127.0.0.1", "max_inflight": "7"})

    assert config.settings.nats_servers == ("nats://127.0.0.1:4222",)
    assert (config.settings.queue_name, config.settings.durable) == ("faas-request", "faas-workers")
    assert config.settings.max_inflight == 7
    assert config.settings.dead_letter_subject == "faas-dead-letter.faas-request"
    assert config.front_door == "http://127.0.0.1:8080/function/queue-worker"
    assert config.source.endswith("stack.yml (queue-worker)")


def test_without_a_stack_the_environment_and_the_workers_defaults_apply() -> None:
    config = load(None, None, None, {"port": "9090"})

    assert config.settings.queue_name == "faas-request"
    assert config.front_door == "http://127.0.0.1:9090"
    assert load(None, None, "http://gw/function/qw/", {}).front_door == "http://gw/function/qw"


def test_environment_files_come_before_the_functions_own_environment(tmp_path: Path) -> None:
    (tmp_path / "env.yml").write_text(yaml.safe_dump({"environment": {"queue_name": "from-file", "debug": True}}))
    stack = {
        "provider": {"gateway": "http://gw:8080/"},
        "functions": {"a": {"environment_file": ["env.yml"], "environment": {"max_inflight": 5}}, "b": {}},
    }

    found = stack_function(yaml.safe_dump(stack), {}, "a", read=lambda name: (tmp_path / name).read_text())

    assert found.environment == {"queue_name": "from-file", "debug": "true", "max_inflight": "5"}
    assert found.gateway == "http://gw:8080"


@pytest.mark.parametrize(
    ("text", "wanted", "error"),
    [
        ("functions: {a: {}, b: {}}", None, "several functions (a, b): pick one with --function"),
        ("functions: {a: {}}", "c", "no function 'c'; it has a"),
        ("provider: {}", None, "no functions: section"),
        ("functions: [", None, "not YAML"),
        ("functions: {a: {environment: [x]}}", None, "a.environment: expected a map"),
    ],
)
def test_a_stack_that_cannot_be_used_says_why(text: str, wanted: str | None, error: str) -> None:
    with pytest.raises(StackError, match=re.escape(error)):
        stack_function(text, {}, wanted)


def _reasons_in_code() -> set[str]:
    """Every literal reason given to DeadLetter(...) or named a reason, in the worker and runtime."""
    found: set[str] = set()
    for path in [*(ROOT / "queue-worker").rglob("*.py"), *(ROOT / "template/python3-jetstream/runtime").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeadLetter" and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.add(first.value)
                elif isinstance(first, ast.Name):
                    found.add(f"<variable {first.id} in {path.name}>")
    return found


def test_every_dead_letter_reason_the_code_gives_is_one_the_tool_accepts() -> None:
    # The one reason chosen at run time (undecodable or invalid_request) is named in the worker.
    literal = {r for r in _reasons_in_code() if not r.startswith("<")}
    variables = {r for r in _reasons_in_code() if r.startswith("<")}

    assert literal <= set(DEAD_LETTER_REASONS), literal - set(DEAD_LETTER_REASONS)
    assert variables == {"<variable reason in worker.py>"}
    assert {"undecodable", "invalid_request"} <= set(DEAD_LETTER_REASONS)
