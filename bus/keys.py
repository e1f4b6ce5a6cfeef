"""Keys and secrets: the admin key file, agency API keys, the bus master secret and derivations.

API keys are stored only as SHA-256 hashes (they are long random strings, so a slow hash adds
nothing). Record signatures use a per-agency signing secret derived from the API key, so the SDK
needs nothing but its key and the bus never stores the key itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path

_SIGNING_LABEL = b"databus/record-signing/v1"


def new_api_key(agency_id: str) -> str:
    return f"dbk_{secrets.token_urlsafe(32)}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def signing_secret_for(api_key: str) -> bytes:
    """The per-agency record-signing secret, derived from its API key (SDK and bus agree on it)."""
    return hmac.new(api_key.encode(), _SIGNING_LABEL, hashlib.sha256).digest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _read_or_create(path: Path, make: Callable[[], str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return path.read_text().strip()
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value


def admin_key_file(data_dir: Path) -> Path:
    return Path(data_dir) / "admin.key"


def load_or_create_admin_key(data_dir: Path) -> str:
    """Generated once into ``<data-dir>/admin.key`` (mode 0600) and reused on every start."""
    return _read_or_create(admin_key_file(data_dir), lambda: f"dba_{secrets.token_urlsafe(32)}")


def load_or_create_master_secret(data_dir: Path) -> bytes:
    """The bus's own secret: pseudonym keys and fingerprints derive from it. Never leaves the data dir."""
    return bytes.fromhex(_read_or_create(Path(data_dir) / "bus.key", lambda: secrets.token_hex(32)))


def derive(master: bytes, *labels: str) -> bytes:
    """A sub-key for one purpose (e.g. the pseudonym key of one grant)."""
    return hmac.new(master, "/".join(labels).encode(), hashlib.sha256).digest()
