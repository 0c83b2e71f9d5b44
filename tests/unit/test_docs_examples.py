"""The configs the migration guides and the troubleshooting page show are
valid as written: each ```toml block parses into a `Config`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from secretd.config.load import parse_config

DOCS = Path(__file__).resolve().parents[2] / "docs"
PAGES = ("migrate-vault-agent.md", "migrate-aws-agent.md")


def blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for index, block in enumerate(
            re.findall(r"```toml\n(.*?)```", (DOCS / page).read_text(), re.S)
        ):
            found.append((f"{page}#{index}", block))
    return found


@pytest.mark.parametrize(("where", "text"), blocks(), ids=[w for w, _ in blocks()])
def test_every_toml_example_is_a_valid_config(where: str, text: str) -> None:
    config = parse_config(text, source=where)
    assert config.backends


def test_the_guides_have_examples() -> None:
    assert len(blocks()) >= 2
