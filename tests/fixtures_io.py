"""Read the Go-encoded vectors, keeping each ``message`` as the exact bytes Go produced."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "queue-requests.jsonl"


@dataclass(frozen=True)
class Vector:
    name: str
    message: bytes
    body: bytes
    function: str
    invoke_path: str
    callback_url: str | None
    call_id: str
    fields: dict[str, Any]


def load_vectors() -> list[Vector]:
    """Every vector; ``message`` is the raw JSON text between its key and the next one."""
    vectors = []
    decoder = json.JSONDecoder()
    for line in FIXTURES.read_text().splitlines():
        fields = json.loads(line)
        start = line.index('"message":') + len('"message":')
        _, end = decoder.raw_decode(line, start)
        vectors.append(
            Vector(
                name=fields["name"],
                message=line[start:end].encode(),
                body=bytes.fromhex(fields["body_hex"]),
                function=fields["function"],
                invoke_path=fields["invoke_path"],
                callback_url=fields["callback_url"],
                call_id=fields["call_id"],
                fields=fields,
            )
        )
    return vectors
