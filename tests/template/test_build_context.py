"""The build context as `faas-cli build --shrinkwrap` makes it, installed and run as the image would."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from nats.aio.client import Client

from harness.natsd import NatsServer
from harness.publish import publish_request
from harness.servers import RecordingServer
from harness.shrinkwrap import shrinkwrap
from harness.worker import ROOT, WorkerProcess
from tests.support import Queue, queued, wait_for_empty

pytestmark = pytest.mark.e2e


def _run(*command: str, cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"


def _image_venv(context: Path, tmp_path: Path) -> Path:
    """A clean venv with the template's requirements, then the function's, as the Dockerfile's build stage."""
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
    _run(*pip, "-r", "requirements.txt", cwd=context)
    _run(*pip, "-r", "function/requirements.txt", cwd=context)
    return venv / "bin" / "python"


async def test_the_shrinkwrapped_queue_worker_installs_starts_and_processes_a_request(
    tmp_path: Path,
    natsd: NatsServer,
    nc: Client,
    queue: Queue,
    gateway: RecordingServer,
    receiver: RecordingServer,
) -> None:
    # Given build/queue-worker assembled from stack.yml as faas-cli does
    stack = yaml.safe_load((ROOT / "stack.yml").read_text())
    context = shrinkwrap(ROOT, "queue-worker", stack["functions"]["queue-worker"], build_dir=tmp_path / "build")
    assert (context / "function" / "worker.py").is_file()  # the handler overlaid the starter
    assert "aiohttp" in (context / "function" / "requirements.txt").read_text()
    assert not (context / "function" / "__pycache__").exists()

    # And installed into a clean venv, with the function's tests run as the image's test stage runs them
    python = await asyncio.to_thread(_image_venv, context, tmp_path)
    await asyncio.to_thread(_run, str(python), "-m", "pip", "install", "--quiet", "pytest==9.2.0", cwd=context)
    (context / "function" / "__init__.py").touch()
    await asyncio.to_thread(_run, str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "function", cwd=context)

    # When it starts as the image's command starts it: python index.py, in the context, no handler_dir
    env = {"nats_url": natsd.url, "gateway_url": gateway.url, **queue.env()}
    worker = WorkerProcess(env, python=str(python), cwd=context).start()
    try:
        await worker.wait_ready()
        await publish_request(nc, queue.subject, queued("figlet", "wrapped-1", receiver.url + "/done"))

        # Then it processes a request end to end
        [callback] = await receiver.wait_for(1)
        await wait_for_empty(nc, queue)
        assert callback.header("X-Call-Id") == "wrapped-1"
        assert gateway.calls[0].path_qs == "/function/figlet/"

        # And the operator's command is there by name, as the Dockerfile's PATH and chmod make it
        dockerfile = (context / "Dockerfile").read_text()
        assert 'ENV PATH="/opt/venv/bin:${PATH}:/home/app/function/bin"' in dockerfile
        assert "chmod a+rx function/bin/*" in dockerfile
        for command in (context / "function" / "bin").iterdir():
            command.chmod(0o755)
        path = f"{python.parent}:/usr/bin:/bin:{context / 'function' / 'bin'}"
        shown = await asyncio.to_thread(
            subprocess.run,
            ["queue-worker", "queues", "--json"],
            env={"PATH": path, "nats_url": natsd.url},
            cwd=context,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        assert queue.stream in {q["stream"] for q in json.loads(shown.stdout)}
    finally:
        worker.close()


async def test_the_starter_function_of_the_template_passes_its_own_tests(tmp_path: Path) -> None:
    # As `faas-cli new --lang python3-jetstream starter` would create it
    handler = tmp_path / "starter"
    shutil.copytree(ROOT / "template" / "python3-jetstream" / "function", handler)
    context = shrinkwrap(ROOT, "starter", {"lang": "python3-jetstream", "handler": str(handler)}, tmp_path / "build")
    python = await asyncio.to_thread(_image_venv, context, tmp_path)
    await asyncio.to_thread(_run, str(python), "-m", "pip", "install", "--quiet", "pytest==9.2.0", cwd=context)

    await asyncio.to_thread(_run, str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "function", cwd=context)
