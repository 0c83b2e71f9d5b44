"""The on-disk record of one secret: its versions, their envelopes and its stages.

One JSON file per secret, named by the SHA-256 of the secret name (so no name
can traverse, collide with another or exceed a file-name limit):

    {"format": 1, "name": "db/app", "generation": 7,
     "stages": {"current": "<vid>", "previous": "<vid>", "pending": "<vid>", ...},
     "versions": [{"version_id", "created_at", "key_id", "wrapped_key", "nonce",
                   "ciphertext"}, ...],                       # oldest first
     "mac_key_id": "<key id>", "mac": "<base64 HMAC-SHA256>"}

Each envelope is bound to its name and version by AES-GCM associated data (see
envelope.py). The header - name, generation, stages, version list - is not a
ciphertext, so it carries an HMAC-SHA256 over the canonical JSON of everything
but `mac`, keyed by a key derived from the store key: moving a stage label to
another version, dropping or reordering versions, or replaying an older
generation under a newer one's stages fails to verify. `generation` grows by
one on every write so a reader can notice a file that went backwards.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from secretd.errors import IntegrityError, StoreError
from secretd.model import CURRENT, SecretName, name_problem, rfc3339
from secretd.store.envelope import NONCE_BYTES, TAG_BYTES, WRAPPED_KEY_BYTES, Envelope
from secretd.store.keyfile import Keyring, StoreKey

RECORD_FORMAT = 1
RECORD_SUFFIX = ".secret"
MAX_VERSIONS_PER_RECORD = 64  # hard cap when reading: history + stages stay well below
_VERSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
STAGE_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_RECORD_KEYS = {"format", "name", "generation", "stages", "versions", "mac_key_id", "mac"}
_VERSION_KEYS = {"version_id", "created_at", "key_id", "wrapped_key", "nonce", "ciphertext"}


@dataclass(frozen=True, slots=True)
class SealedVersion:
    """One version as stored: metadata plus its envelope (never plaintext)."""

    version_id: str
    created_at: datetime
    envelope: Envelope


@dataclass(frozen=True, slots=True)
class SecretRecord:
    """Everything the store knows about one secret."""

    name: SecretName
    generation: int
    versions: tuple[SealedVersion, ...]  # oldest first
    stages: dict[str, str] = field(default_factory=dict)  # stage label -> version id
    mac_key_id: str = ""  # the key that authenticated the header when read

    def version(self, version_id: str) -> SealedVersion | None:
        for sealed in self.versions:
            if sealed.version_id == version_id:
                return sealed
        return None

    def stages_of(self, version_id: str) -> frozenset[str]:
        return frozenset(label for label, vid in self.stages.items() if vid == version_id)

    @property
    def current(self) -> SealedVersion:
        found = self.version(self.stages[CURRENT])
        assert found is not None  # decode_record and the version rules guarantee it
        return found


def record_filename(name: str) -> str:
    """The file holding `name`: hex SHA-256 of the name plus `.secret`."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest() + RECORD_SUFFIX


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _canonical(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _mac(key: StoreKey, body: dict[str, Any]) -> bytes:
    return hmac.new(key.mac_key, b"secretd record v1\0" + _canonical(body), "sha256").digest()


def encode_record(record: SecretRecord, key: StoreKey) -> bytes:
    """Serialise `record` and authenticate its header with `key`."""
    body: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "name": str(record.name),
        "generation": record.generation,
        "stages": dict(sorted(record.stages.items())),
        "versions": [
            {
                "version_id": v.version_id,
                "created_at": rfc3339(v.created_at),
                "key_id": v.envelope.key_id,
                "wrapped_key": _b64(v.envelope.wrapped_key),
                "nonce": _b64(v.envelope.nonce),
                "ciphertext": _b64(v.envelope.ciphertext),
            }
            for v in record.versions
        ],
        "mac_key_id": key.key_id,
    }
    body["mac"] = _b64(_mac(key, body))
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def _parse_json(data: bytes) -> dict[str, Any]:
    if not data:
        raise IntegrityError("is empty")
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise IntegrityError("is not valid JSON (truncated or corrupted)") from None
    if not isinstance(doc, dict):
        raise IntegrityError("is not a JSON object")
    return doc


def peek_name(data: bytes) -> SecretName:
    """The secret name a record claims, unverified (for listing and watching)."""
    doc = _parse_json(data)
    raw = doc.get("name")
    if not isinstance(raw, str) or name_problem(raw) is not None:
        raise IntegrityError("has no valid secret name")
    return SecretName(raw)


def decode_record(data: bytes, keyring: Keyring, *, expected_name: str) -> SecretRecord:
    """Parse and verify a record file. Raises IntegrityError, UnknownKeyId or
    StoreError (unsupported format); messages never contain values."""
    doc = _parse_json(data)
    if set(doc) != _RECORD_KEYS:
        raise IntegrityError("does not have the fields of a store record")
    if doc["format"] != RECORD_FORMAT:
        raise StoreError(
            f"uses store format {doc['format']!r}; this secretd reads format {RECORD_FORMAT}"
        )
    if doc["name"] != expected_name:
        raise IntegrityError("holds a different secret (was it copied or moved here?)")
    key = keyring.get(_text(doc, "mac_key_id", _KEY_ID))
    body = {k: v for k, v in doc.items() if k != "mac"}
    if not hmac.compare_digest(_mac(key, body), _bytes(doc, "mac", 32)):
        raise IntegrityError("header failed to verify (tampered, or sealed with another key)")
    return _record_from(doc, key.key_id)


def _record_from(doc: dict[str, Any], mac_key_id: str) -> SecretRecord:
    generation = doc["generation"]
    if type(generation) is not int or generation < 0:
        raise IntegrityError("has a bad generation")
    raw_versions = doc["versions"]
    if not isinstance(raw_versions, list) or not 1 <= len(raw_versions) <= MAX_VERSIONS_PER_RECORD:
        raise IntegrityError("has a bad version list")
    versions = tuple(_version_from(v) for v in raw_versions)
    ids = {v.version_id for v in versions}
    if len(ids) != len(versions):
        raise IntegrityError("has two versions with one id")
    stages = doc["stages"]
    if not isinstance(stages, dict) or CURRENT not in stages:
        raise IntegrityError("has no current version")
    for label, vid in stages.items():
        if STAGE_LABEL.fullmatch(label) is None or vid not in ids:
            raise IntegrityError("has a stage pointing nowhere")
    return SecretRecord(SecretName(doc["name"]), generation, versions, dict(stages), mac_key_id)


def _version_from(raw: Any) -> SealedVersion:
    if not isinstance(raw, dict) or set(raw) != _VERSION_KEYS:
        raise IntegrityError("has a malformed version entry")
    created = _text(raw, "created_at", None)
    try:
        created_at = datetime.fromisoformat(created)
    except ValueError:
        raise IntegrityError("has a bad created_at") from None
    if created_at.tzinfo is None:
        raise IntegrityError("has a created_at without a time zone")
    envelope = Envelope(
        key_id=_text(raw, "key_id", _KEY_ID),
        wrapped_key=_bytes(raw, "wrapped_key", WRAPPED_KEY_BYTES),
        nonce=_bytes(raw, "nonce", NONCE_BYTES),
        ciphertext=_bytes(raw, "ciphertext", None),
    )
    if len(envelope.ciphertext) < TAG_BYTES:
        raise IntegrityError("has a truncated ciphertext")
    return SealedVersion(_text(raw, "version_id", _VERSION_ID), created_at, envelope)


def _text(doc: dict[str, Any], key: str, pattern: re.Pattern[str] | None) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or (pattern is not None and pattern.fullmatch(value) is None):
        raise IntegrityError(f"has a malformed {key}")
    return value


def _bytes(doc: dict[str, Any], key: str, size: int | None) -> bytes:
    value = _text(doc, key, None)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise IntegrityError(f"has a malformed {key}") from None
    if size is not None and len(raw) != size:
        raise IntegrityError(f"has a {key} of the wrong length")
    return raw
