"""Decentralised NATS auth for a test: an operator, a system account, an account with JetStream,
and a user's ``.creds`` file, all signed here with nkeys (no nsc needed)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import nkeys

UNLIMITED = {
    "subs": -1,
    "data": -1,
    "payload": -1,
    "imports": -1,
    "exports": -1,
    "wildcards": True,
    "conn": -1,
    "leaf": -1,
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _keypair(prefix: int) -> tuple[str, str, nkeys.KeyPair]:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    pair = nkeys.from_seed(seed)
    return seed.decode(), pair.public_key.decode(), pair


def _jwt(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    claims = {**claims, "iat": int(time.time())}
    claims["jti"] = base64.b32encode(hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()).decode()
    payload = _b64(json.dumps(claims).encode())
    return f"{header}.{payload}.{_b64(signer.sign(f'{header}.{payload}'.encode()))}"


@dataclass(frozen=True)
class Decentralised:
    """The server's configuration and the user's credentials file."""

    server_config: str
    creds: str


def decentralised() -> Decentralised:
    _, operator, operator_key = _keypair(nkeys.PREFIX_BYTE_OPERATOR)
    _, account, account_key = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    _, system, _ = _keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    user_seed, user, _ = _keypair(nkeys.PREFIX_BYTE_USER)
    operator_jwt = _jwt(
        {"iss": operator, "sub": operator, "name": "op", "nats": {"type": "operator", "version": 2}}, operator_key
    )
    storage = {"mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    account_jwt = _jwt(
        {
            "iss": operator,
            "sub": account,
            "name": "qw",
            "nats": {"limits": {**UNLIMITED, **storage}, "type": "account", "version": 2},
        },
        operator_key,
    )
    system_jwt = _jwt(
        {"iss": operator, "sub": system, "name": "SYS", "nats": {"limits": UNLIMITED, "type": "account", "version": 2}},
        operator_key,
    )
    user_claims = {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2}
    user_jwt = _jwt({"iss": account, "sub": user, "name": "worker", "nats": user_claims}, account_key)
    config = (
        f"operator: {operator_jwt}\nsystem_account: {system}\nresolver: MEMORY\n"
        f"resolver_preload: {{\n  {account}: {account_jwt}\n  {system}: {system_jwt}\n}}\n"
    )
    creds = (
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n"
    )
    return Decentralised(config, creds)
