"""Make the queue-worker folder importable as the package ``function``, as it is in the image."""

from __future__ import annotations

from pathlib import Path

from runtime.loader import import_package

ROOT = Path(__file__).resolve().parent.parent

import_package(ROOT / "queue-worker")
