"""What the generated reference pages (docs/reference/cli.md from the CLI's
parser, docs/reference/config.md from the config schema) share: escaping text
for a Markdown table cell, and the `python -m ... [FILE]` entry that writes the
page to FILE or prints it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def table_cell(text: str) -> str:
    """`text` safe inside one Markdown table cell (no column break, one line)."""
    return text.replace("|", "\\|").replace("\n", " ")


def write_page(render: Callable[[], str], argv: list[str]) -> int:
    """Write the rendered page to argv[0], or to stdout without an argument."""
    text = render()
    if argv:
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0
