"""API keys: ``Authorization: Bearer <key>`` checked against SHA-256 hashes.

Keys are never stored: the service holds their SHA-256 hex digests, from
``GPU_PRICER_API_KEY_HASHES`` (comma-separated, each ``hash`` or ``id:hash``)
and/or a mounted file (``GPU_PRICER_API_KEY_HASHES_FILE``, one per line,
``#`` comments).  A presented key is hashed and compared with every stored
digest in constant time (`hmac.compare_digest`), so timing reveals neither
which digest nor how much of it matched.  The key's id (its label, or the
first 8 hex digits of its digest) is what logs and metrics see.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from fastapi import HTTPException, Request


@dataclass(frozen=True)
class KeyHash:
    key_id: str
    digest: bytes


def parse_hashes(entries: list[str]) -> list[KeyHash]:
    """'hash' or 'id:hash' entries -> KeyHash; a malformed entry is a startup error."""
    out = []
    for raw in entries:
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        key_id, _, hexdigest = entry.rpartition(":")
        try:
            digest = bytes.fromhex(hexdigest)
        except ValueError:
            raise ValueError(f"API key hash is not hex: {hexdigest[:8]}...") from None
        if len(digest) != 32:
            raise ValueError("API key hash must be a SHA-256 digest (64 hex digits)")
        out.append(KeyHash(key_id or hexdigest[:8], digest))
    return out


def load_hashes(inline: str, file: Path | None) -> list[KeyHash]:
    entries = [e for e in inline.split(",") if e.strip()]
    if file is not None:
        entries += file.read_text().splitlines()
    return parse_hashes(entries)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest to configure for `key`."""
    return hashlib.sha256(key.encode()).hexdigest()


def match(keys: list[KeyHash], presented: str) -> str | None:
    """The id of the key whose digest matches, or None; every digest is compared."""
    digest = hashlib.sha256(presented.encode()).digest()
    found: str | None = None
    for k in keys:
        if hmac.compare_digest(k.digest, digest):
            found = k.key_id
    return found


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def authenticate(request: Request) -> str | None:
    """FastAPI dependency: the caller's key id (None when the service runs
    without keys); 401 with WWW-Authenticate otherwise."""
    keys: list[KeyHash] = request.app.state.api_keys
    if not keys:
        return None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    key_id = match(keys, token.strip()) if scheme.lower() == "bearer" and token else None
    if key_id is None:
        raise HTTPException(401, detail="missing or invalid API key",
                            headers={"WWW-Authenticate": "Bearer"})
    request.state.key_id = key_id
    return key_id
