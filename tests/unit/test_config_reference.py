"""docs/reference/config.md is generated from the schema (secretd.config.reference):
it must be the committed file, every key must be documented, and the restart-only
list must name real keys."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from secretd.config.reference import render, tables
from secretd.config.schema import RESTART_ONLY, Config

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference" / "config.md"


def test_the_committed_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text() == render(), (
        "docs/reference/config.md is stale: run "
        "`.venv/bin/python -m secretd.config.reference docs/reference/config.md`"
    )


def models() -> list[type[BaseModel]]:
    return [table.model for table in tables(Config, "", "")]


def test_every_key_has_a_description() -> None:
    missing = [
        f"{model.__name__}.{name}"
        for model in models()
        for name, field in model.model_fields.items()
        if not (field.description or "").strip()
    ]
    assert not missing, f"add a docstring directly below each of: {', '.join(missing)}"


def test_every_table_is_in_the_reference() -> None:
    names = {model.__name__ for model in models()}
    assert {"AgentSection", "TcpSection", "FileBackendConfig", "AppRoleAuth", "Wait"} <= names
    assert {"RandomRotation", "CommandRotation", "PostgresqlRotation"} <= names


def test_restart_only_keys_exist() -> None:
    for key in RESTART_ONLY:
        section, _, field = key.partition(".")
        assert section in Config.model_fields, key
        if field:
            model = Config.model_fields[section].annotation
            assert isinstance(model, type) and issubclass(model, BaseModel)
            assert field in model.model_fields, key
