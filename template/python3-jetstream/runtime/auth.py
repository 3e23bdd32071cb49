"""How the connector proves who it is to NATS, and how it checks the server: from secret files.

``nats_auth`` picks one mode; its secrets are read from ``secret_mount_path`` (where OpenFaaS
mounts the function's secrets), never from the environment:

============  ==============================================
mode          secret files
============  ==============================================
``none``      (nothing)
``userpass``  ``nats-user``, ``nats-password``
``token``     ``nats-token``
``nkey``      ``nats-nkey-seed``
``creds``     ``nats.creds`` (a JWT and its seed)
============  ==============================================

TLS: ``nats_tls_ca`` names the secret holding the CA bundle that signed the server's
certificate; ``nats_tls_cert`` and ``nats_tls_key`` name a client certificate and key, for
servers that verify clients. Setting any of them turns TLS on.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .env import Env
from .errors import ConfigError

#: Authentication modes and the secret files each one reads.
MODES: dict[str, tuple[str, ...]] = {
    "none": (),
    "userpass": ("nats-user", "nats-password"),
    "token": ("nats-token",),
    "nkey": ("nats-nkey-seed",),
    "creds": ("nats.creds",),
}
#: Where OpenFaaS mounts a function's secrets.
SECRET_MOUNT_PATH = "/var/openfaas/secrets"


@dataclass(frozen=True, slots=True)
class NatsAuth:
    """Keyword arguments for ``nats.connect`` that carry credentials and TLS; never logged."""

    mode: str
    tls: bool
    options: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Env) -> NatsAuth:
        """Read ``nats_auth`` and the TLS settings, and the secrets they name.

        Raises:
            ConfigError: an unknown mode, or a secret that is missing or empty.
        """
        folder = secret_folder(env)
        mode = env.choice("nats_auth", "none", MODES)
        values = [_secret(folder, name, "nats_auth", mode) for name in MODES[mode]]
        options: dict[str, Any] = {}
        if mode == "userpass":
            options.update(user=values[0], password=values[1])
        elif mode == "token":
            options.update(token=values[0])
        elif mode == "nkey":
            options.update(nkeys_seed_str=values[0])
        elif mode == "creds":
            options.update(user_credentials=str(folder / MODES["creds"][0]))
        context = _tls(env, folder)
        if context is not None:
            options["tls"] = context
        return cls(mode=mode, tls=context is not None, options=options)


def secret_folder(env: Env) -> Path:
    """Where the function's secrets are mounted (``secret_mount_path``)."""
    return Path(env.string("secret_mount_path", SECRET_MOUNT_PATH))


def read_secret(folder: Path, name: str) -> str | None:
    """A secret's value without surrounding white space, or ``None`` when it is missing or empty."""
    try:
        content = (folder / name).read_text().strip()
    except OSError:
        return None
    return content or None


def _secret(folder: Path, name: str, variable: str, value: str) -> str:
    content = read_secret(folder, name)
    if content is None:
        raise ConfigError(variable, value, f"expected the secret {name} in {folder}")
    return content


def _tls(env: Env, folder: Path) -> ssl.SSLContext | None:
    ca, cert, key = env.raw("nats_tls_ca"), env.raw("nats_tls_cert"), env.raw("nats_tls_key")
    if ca is None and cert is None and key is None:
        return None
    if (cert is None) != (key is None):
        missing = "nats_tls_key" if key is None else "nats_tls_cert"
        raise ConfigError(missing, "", "expected both nats_tls_cert and nats_tls_key, or neither")
    try:
        context = ssl.create_default_context(cafile=str(folder / ca) if ca else None)
        if cert is not None and key is not None:
            context.load_cert_chain(str(folder / cert), str(folder / key))
    except (OSError, ssl.SSLError) as exc:
        variable = "nats_tls_ca" if ca and not (folder / ca).is_file() else "nats_tls_cert"
        raise ConfigError(variable, ca or cert or "", f"cannot load it from {folder}: {exc}") from None
    return context
