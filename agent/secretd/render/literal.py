"""The secret reads a template writes out literally, which `secretd check` and
usage tracking resolve without rendering. Kept apart from `render.jinja` so
that configurations without text templates never import Jinja2."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LiteralRead:
    """A `secret()` / `secret_json()` call whose arguments the template writes as
    strings: what `secretd check` can resolve without rendering."""

    secret: str
    field: str | None
    stage: str
    line: int
    json_object: bool = False  # secret_json(): the value must be a JSON object
