"""Stopping the processes the harness starts."""

from __future__ import annotations

import subprocess

#: How long a process may take to exit after SIGTERM before it is killed.
STOP_TIMEOUT_S = 10.0


def stop(process: subprocess.Popen[bytes] | None, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL; nothing if it has exited already."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        kill(process)


def kill(process: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL, as a crash, and reap it."""
    if process is not None and process.poll() is None:
        process.kill()
        process.wait()
