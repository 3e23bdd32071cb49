"""What faas-cli checks before it builds or generates, checked here without faas-cli."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.ports import free_port
from harness.worker import ROOT

TEMPLATES = ROOT / "template"
STACKS = [ROOT / "stack.yml", ROOT / "examples" / "two-queues.yml"]
#: The fields go-sdk's stack schema knows for a function (faas-cli ignores nothing silently).
FUNCTION_FIELDS = {
    "lang", "handler", "image", "fprocess", "environment", "environment_file", "secrets", "labels",
    "annotations", "limits", "requests", "constraints", "build_args", "build_options", "build_secrets",
    "readonly_root_filesystem", "namespace", "skip_build", "platforms",
}  # fmt: skip
#: Template names in the OpenFaaS template store, which `faas-cli template pull` may write.
STORE_TEMPLATES = {
    "python3-http",
    "python3-http-debian",
    "python3-flask",
    "python3",
    "python27-flask",
    "python3-debian",
}


def _envsubst(text: str) -> str:
    """drone/envsubst as faas-cli runs it, for ``${VAR:-default}`` with VAR unset."""
    return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: m.group(2), text)


def _stack(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(_envsubst(path.read_text()))
    return loaded


def test_each_template_is_found_where_faas_cli_looks() -> None:
    for folder in TEMPLATES.iterdir():
        spec = yaml.safe_load((folder / "template.yml").read_text())
        assert spec["language"] == folder.name == folder.name.lower()
        assert folder.name not in STORE_TEMPLATES
        handler_folder = folder / spec.get("handler_folder", "function")
        assert (handler_folder / "handler.py").is_file()
        assert (handler_folder / "handler_test.py").is_file()
        assert spec["fprocess"] == "python index.py"
        assert (folder / "index.py").is_file()
        # build_options reach the Dockerfile as ADDITIONAL_PACKAGE.
        assert all(option["packages"] for option in spec["build_options"])
        assert "ARG ADDITIONAL_PACKAGE" in (folder / "Dockerfile").read_text()


def test_template_is_committed_not_ignored() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "template/python3-jetstream/template.yml"], cwd=ROOT)
    assert ignored.returncode == 1


@pytest.mark.parametrize("path", STACKS, ids=[p.name for p in STACKS])
def test_stack_files_keep_the_schema_rules(path: Path) -> None:
    raw = path.read_text()
    stack = _stack(path)

    assert re.search(r"^version: 1\.0$", raw, flags=re.MULTILINE)
    assert stack["provider"]["name"] == "openfaas"
    assert "${OPENFAAS_URL:-" in raw
    assert "${REGISTRY:-" in raw
    for name, function in stack["functions"].items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name)
        assert set(function) <= FUNCTION_FIELDS, set(function) - FUNCTION_FIELDS
        assert (TEMPLATES / function["lang"] / "template.yml").is_file()
        assert (ROOT / function["handler"] / "handler.py").is_file()
        assert all(isinstance(value, str) for value in function["environment"].values()), name
        assert all(isinstance(value, str) for value in function["labels"].values()), name
        assert function["limits"]["memory"]
        assert function["requests"]["memory"]
        assert function["readonly_root_filesystem"] is True
        assert function["labels"]["com.openfaas.scale.min"] == "1"
        assert "com.openfaas.scale.zero" not in function["labels"]


def test_the_two_queue_example_gives_each_queue_its_own_names_and_tuning() -> None:
    functions = _stack(ROOT / "examples" / "two-queues.yml")["functions"]
    default, slow = (functions[name]["environment"] for name in ("queue-worker", "queue-worker-slow"))

    for key in ("queue_name", "nats_stream", "nats_durable", "max_inflight", "retry_http_codes"):
        assert default.get(key, "default") != slow.get(key), key


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", str(TEMPLATES / "python3-jetstream" / "Dockerfile")],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_the_image_ships_no_build_tools_and_runs_as_a_numeric_non_root_user() -> None:
    dockerfile = (TEMPLATES / "python3-jetstream" / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)
    ship = next(stage for stage in stages if " AS ship" in stage.splitlines()[0])
    base = next(stage for stage in stages if " AS base" in stage.splitlines()[0])

    assert re.search(r"^ARG PYTHON_VERSION=\d+\.\d+\.\d+$", dockerfile, flags=re.MULTILINE)
    assert "apt-get" not in base + ship
    assert re.search(r"^USER \d+:\d+$", ship, flags=re.MULTILINE)
    assert "HEALTHCHECK" in ship
    assert "PYTHONDONTWRITEBYTECODE=1" in base
    assert "COPY --from=test" in ship


def test_the_healthcheck_asks_the_port_the_worker_serves(tmp_path: Path) -> None:
    """The HEALTHCHECK's own command, run against a probe server on another port than 8080."""
    dockerfile = (TEMPLATES / "python3-jetstream" / "Dockerfile").read_text()
    command = json.loads(re.search(r"HEALTHCHECK [^\n]*\\\n\s*CMD (\[.*\])", dockerfile).group(1))  # type: ignore[union-attr]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=tmp_path)
    (tmp_path / "_").mkdir()
    (tmp_path / "_" / "health").write_text("OK")
    try:
        for _ in range(100):
            healthy = subprocess.run(
                [sys.executable, *command[1:]], env={"port": str(port), "PATH": "/usr/bin"}, capture_output=True
            )
            if healthy.returncode == 0:
                break
            time.sleep(0.05)
        unhealthy = subprocess.run([sys.executable, *command[1:]], env={"port": str(free_port())}, capture_output=True)
    finally:
        server.terminate()
        server.wait()

    assert command[0] == "python"
    assert healthy.returncode == 0, healthy.stderr
    assert unhealthy.returncode != 0
