"""The Go yardstick: ``bench/goworker``, a minimal nats.go + net/http worker, built when a Go
toolchain and nats.go's sources are on this machine (Debian: ``apt-get install golang-go
golang-github-nats-io-go-nats-dev``; no module proxy is needed), else left out of the run.

The issue that set the CPU targets measured the worker against such a worker (98 µs of CPU a
message against Go's 46 µs); on a machine whose speed moves by half from one hour to the next,
Go's CPU in the same run is the one measure those absolute targets can be read against.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("goworker")
#: Where Debian's golang-*-dev packages put Go sources (GOPATH layout).
GOPATH = Path("/usr/share/gocode")


def build() -> Path | None:
    """The Go worker's binary, built into a temporary directory; ``None`` without a toolchain
    or nats.go's sources."""
    go = shutil.which("go")
    if go is None or not (GOPATH / "src/github.com/nats-io/nats.go").is_dir():
        return None
    out = Path(tempfile.mkdtemp(prefix="goworker-"))
    environ = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOCACHE": str(out / "cache")}
    subprocess.run([go, "build", "-o", str(out / "goworker"), "."], cwd=SOURCE, env=environ, check=True)
    return out / "goworker"
