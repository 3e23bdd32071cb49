"""Results too large to travel in a callback job, kept in a JetStream object store bucket.

A callback job carries the function's result, base64 in JSON: past a few hundred KiB it no
longer fits NATS's max payload. Then the result goes to this bucket under the job's id and the
job carries the reference, so a result of any size reaches its receiver (or a dead letter that
can be replayed) without invoking the function again. Objects are deleted once delivered.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from nats.aio.client import Client
from nats.js.api import ObjectStoreConfig, StorageType
from nats.js.errors import BucketNotFoundError, NotFoundError
from nats.js.object_store import ObjectStore


@dataclass(frozen=True, slots=True)
class ResultStore:
    """The bucket, created on first use."""

    bucket: str
    replicas: int = 1

    async def put(self, client: Client, name: str, data: bytes) -> None:
        await (await self._store(client)).put(name, data)

    async def get(self, client: Client, name: str) -> bytes:
        """The result stored as ``name``.

        Raises:
            NotFoundError: no such result (deleted, or the bucket is gone).
        """
        result = await (await self._store(client)).get(name)
        return result.data or b""

    async def delete(self, client: Client, name: str) -> None:
        with contextlib.suppress(NotFoundError):
            await (await self._store(client)).delete(name)

    async def _store(self, client: Client) -> ObjectStore:
        js = client.jetstream()
        try:
            return await js.object_store(self.bucket)
        except BucketNotFoundError:
            config = ObjectStoreConfig(bucket=self.bucket, storage=StorageType.FILE, replicas=self.replicas)
            return await js.create_object_store(self.bucket, config)
