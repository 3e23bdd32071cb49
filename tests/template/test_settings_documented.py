"""stack.yml and the README say the same as the code about every setting."""

from __future__ import annotations

import re

import yaml

from function.version import VERSION
from harness.worker import HANDLER, ROOT, TEMPLATE

STACK = ROOT / "stack.yml"
#: Read by the runtime for local runs and tests only, never set in a deployment.
LOCAL_ONLY = {"handler_dir"}


def _settings_read_by_the_code() -> set[str]:
    sources = [*(TEMPLATE / "runtime").glob("*.py"), *HANDLER.glob("*.py")]
    pattern = re.compile(r'(?:env\.(?:string|integer|duration|boolean|choice|raw)\(|_subject_token\(env, )\s*"(\w+)"')
    found = {name for path in sources for name in pattern.findall(path.read_text())}
    return found - LOCAL_ONLY


def test_every_setting_the_code_reads_is_in_the_readme_table() -> None:
    table = set(re.findall(r"^\| `(\w+)` \|", (ROOT / "README.md").read_text(), flags=re.MULTILINE))

    assert _settings_read_by_the_code() <= table, _settings_read_by_the_code() - table


def test_every_setting_in_stack_yml_is_read_and_commented() -> None:
    lines = STACK.read_text().splitlines()
    environment = yaml.safe_load(STACK.read_text())["functions"]["queue-worker"]["environment"]
    read = _settings_read_by_the_code()

    for name in environment:
        assert name in read, f"{name} is set in stack.yml but nothing reads it"
        [index] = [i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:")]
        assert lines[index - 1].strip().startswith("#"), f"{name} has no comment above it"


def test_every_deployable_setting_is_in_stack_yml() -> None:
    environment = yaml.safe_load(STACK.read_text())["functions"]["queue-worker"]["environment"]
    # nats_host/nats_port, the pod's host name, and a prefix the queue-worker fixes (queue_worker).
    alternatives = {"nats_url", "nats_client_name", "metrics_namespace"}

    assert _settings_read_by_the_code() - alternatives <= set(environment)


def test_the_image_tag_is_the_version_the_worker_reports() -> None:
    image = yaml.safe_load(STACK.read_text())["functions"]["queue-worker"]["image"]

    assert image.endswith(f"/queue-worker:{VERSION}")
