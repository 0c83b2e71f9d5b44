"""New random values: characters from a named alphabet, as the whole value or
one field of a JSON object (the other fields kept as they are)."""

from __future__ import annotations

import secrets
import string

import orjson

from secretd.model import SecretValue
from secretd.rotation.errors import RotationError

ALPHABETS = {
    "alnum": string.ascii_letters + string.digits,
    "hex": "0123456789abcdef",
    "base64url": string.ascii_letters + string.digits + "-_",
    # Printable ASCII without space, quotes and backslash: safe in most config syntaxes.
    "printable": "".join(
        c for c in string.ascii_letters + string.digits + string.punctuation if c not in "\"'`\\"
    ),
}


def random_text(length: int, alphabet: str) -> str:
    chars = ALPHABETS[alphabet]
    return "".join(secrets.choice(chars) for _ in range(length))


def with_field(current: SecretValue, field: str, text: str) -> SecretValue:
    """`current` (a JSON object) with `field` set to `text`."""
    raw = current.text()
    try:
        doc = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise RotationError(f"the current value is not a JSON object, so it has no field {field!r}")
    doc[field] = text
    return SecretValue(orjson.dumps(doc))


def generate(current: SecretValue, *, length: int, alphabet: str, field: str | None) -> SecretValue:
    text = random_text(length, alphabet)
    if field is None:
        return SecretValue(text.encode())
    return with_field(current, field, text)
