"""The on-disk form of one persisted cache entry (cache/persist.py writes and reads it).

One JSON file per secret in `[cache] persist_dir`, named by the SHA-256 of
the secret's full name (no name can traverse, collide or be too long):

    {"kind": "secretd-cache", "format": 1, "name": "vault/app/db",
     "backend": "vault", "generation": 7, "version_id": "3",
     "created_at": "…", "stages": ["current"], "arn": null,
     "confirmed_at": 1767268800.25,
     "key_id": "…", "wrapped_key": "<b64>", "nonce": "<b64>", "ciphertext": "<b64>",
     "mac": "<b64>"}

The value is sealed as the file store seals one (store/envelope.py): AES-256-GCM
under a fresh data key, the data key wrapped by the persist key, associated
data binding the format, the name and the version id. The name sealed is
`cache:<name>` - no secret name contains ':', so an envelope from a file store
that shares the key can never pass for a cache entry, nor one cache entry for
another. Everything else (backend, generation, stages, the confirmation time)
is covered by an HMAC-SHA256 over the canonical JSON of every field but `mac`,
keyed by a key derived from the persist key: a moved confirmation time or
generation fails like a changed ciphertext. `generation` grows with every
write of the name; cache/persist.py refuses one lower than it has seen.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from secretd.errors import IntegrityError, UnknownKeyId
from secretd.model import SecretName, SecretValue, Version, name_problem, rfc3339

if TYPE_CHECKING:  # the sealing (cryptography) is imported when an entry is sealed or opened
    from secretd.store.keyfile import StoreKey

KIND = "secretd-cache"
FORMAT = 1
SUFFIX = ".cache"
_FIELDS = frozenset(
    {
        "kind",
        "format",
        "name",
        "backend",
        "generation",
        "version_id",
        "created_at",
        "stages",
        "arn",
        "confirmed_at",
        "key_id",
        "wrapped_key",
        "nonce",
        "ciphertext",
        "mac",
    }
)


@dataclass(frozen=True, slots=True)
class Persisted:
    """One entry as kept on disk: the current version and when its backend last confirmed it."""

    name: SecretName
    backend: str
    generation: int
    version: Version
    confirmed_at: float  # epoch seconds
    arn: str | None = None


def file_name(name: str) -> str:
    """The file holding `name`'s entry."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest() + SUFFIX


def sealed_name(name: str) -> str:
    """What the envelope binds: the name, in the cache's own namespace."""
    return f"cache:{name}"


def encode(key: StoreKey, item: Persisted) -> bytes:
    """The file's bytes for `item`, sealed and authenticated with `key`."""
    from secretd.store.envelope import seal

    version = item.version
    envelope = seal(key, sealed_name(item.name), version.version_id, version.value.reveal())
    header: dict[str, Any] = {
        "kind": KIND,
        "format": FORMAT,
        "name": str(item.name),
        "backend": item.backend,
        "generation": item.generation,
        "version_id": version.version_id,
        "created_at": rfc3339(version.created_at),
        "stages": sorted(version.stages),
        "arn": item.arn,
        "confirmed_at": item.confirmed_at,
        "key_id": envelope.key_id,
        "wrapped_key": _b64(envelope.wrapped_key),
        "nonce": _b64(envelope.nonce),
        "ciphertext": _b64(envelope.ciphertext),
    }
    header["mac"] = _b64(_mac(key, header))
    return orjson.dumps(header, option=orjson.OPT_SORT_KEYS)


def decode(key: StoreKey, raw: bytes, *, stored_as: str) -> Persisted:
    """The entry in `raw` (read from the file `stored_as`). Raises UnknownKeyId for an
    entry sealed with another key (foreign), IntegrityError for anything that does not
    verify (tampered, truncated, moved to another file); never partial plaintext."""
    from secretd.store.envelope import Envelope, open_envelope
    from secretd.store.keyfile import Keyring

    header = _object(raw)
    if header.get("kind") != KIND or header.get("format") != FORMAT:
        raise IntegrityError("not a secretd cache entry of a known format")
    if header.get("key_id") != key.key_id:
        raise UnknownKeyId("sealed with another key (a foreign entry, or the key was replaced)")
    given = _unb64(header["mac"])
    if not hmac.compare_digest(given, _mac(key, {k: v for k, v in header.items() if k != "mac"})):
        raise IntegrityError("its header failed to verify (tampered)")
    name = header["name"]
    if not isinstance(name, str) or name_problem(name) is not None:
        raise IntegrityError("names no valid secret")
    if file_name(name) != stored_as:
        raise IntegrityError("holds another secret's entry (was it copied or moved here?)")
    version_id = _text(header, "version_id")
    envelope = Envelope(
        key_id=key.key_id,
        wrapped_key=_unb64(header["wrapped_key"]),
        nonce=_unb64(header["nonce"]),
        ciphertext=_unb64(header["ciphertext"]),
    )
    value = open_envelope(Keyring(key), envelope, sealed_name(name), version_id)
    return Persisted(
        name=SecretName(name),
        backend=_text(header, "backend"),
        generation=_count(header.get("generation")),
        version=Version(version_id, _stages(header), _when(header), SecretValue(value)),
        confirmed_at=_epoch(header.get("confirmed_at")),
        arn=header["arn"] if isinstance(header.get("arn"), str) else None,
    )


def _mac(key: StoreKey, header: dict[str, Any]) -> bytes:
    canonical = orjson.dumps(header, option=orjson.OPT_SORT_KEYS)
    return hmac.new(bytes(key.mac_key), canonical, hashlib.sha256).digest()


def _object(raw: bytes) -> dict[str, Any]:
    try:
        header = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise IntegrityError("not JSON (truncated or damaged)") from None
    if not isinstance(header, dict) or set(header) != _FIELDS:
        raise IntegrityError("not a secretd cache entry (unexpected fields)")
    return header


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    if not isinstance(text, str):
        raise IntegrityError("a binary field is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError("a binary field is not valid base64") from None


def _text(header: dict[str, Any], field: str) -> str:
    value = header.get(field)
    if not isinstance(value, str) or not value:
        raise IntegrityError(f"field {field!r} is not a string")
    return value


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise IntegrityError("generation is not a positive integer")
    return value


def _epoch(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise IntegrityError("confirmed_at is not a time")
    return float(value)


def _stages(header: dict[str, Any]) -> frozenset[str]:
    stages = header.get("stages")
    if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
        raise IntegrityError("stages is not a list of labels")
    return frozenset(stages)


def _when(header: dict[str, Any]) -> datetime:
    try:
        moment = datetime.fromisoformat(_text(header, "created_at").replace("Z", "+00:00"))
    except ValueError:
        raise IntegrityError("created_at is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise IntegrityError("created_at has no time zone")
    return moment
