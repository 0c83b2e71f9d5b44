"""Draws docs/architecture.svg from the text below: `python docs/diagrams/architecture.py`.

The picture is data: boxes on a grid (column, row, width in columns, label
lines) and arrows between them. Edit the text, run this script, commit both;
tests/unit/test_docs_generated.py fails when the SVG is out of date.
"""

from __future__ import annotations

import sys
from html import escape
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "architecture.svg"

# name: (column, row, columns wide, lines); the first line is the title.
BOXES: dict[str, tuple[int, int, int, list[str]]] = {
    "config": (0, 0, 1, ["config/", "TOML -> Config (frozen)"]),
    "graph": (1, 0, 3, ["graph.py + app.py", "build, keep across reload, close; supervise"]),
    "cli": (4, 0, 1, ["cli/", "argparse, exit codes"]),
    "file": (0, 1, 1, ["backends/file", "store/ envelopes, watch"]),
    "vault": (1, 1, 1, ["backends/vault", "KV v2, token keeper"]),
    "aws": (2, 1, 1, ["backends/aws", "aiobotocore, batches"]),
    "access": (3, 1, 1, ["access/", "SO_PEERCRED -> Caller, rules"]),
    "events": (4, 1, 1, ["events.Hub", "Changed(name, version)"]),
    "gateway": (0, 2, 2, ["cache/gateway", "timed, checked, observed calls"]),
    "refresh": (2, 2, 1, ["refresh/", "poll, watch, evict"]),
    "rotation": (3, 2, 1, ["rotation/", "create, set, test, finish"]),
    "cache": (0, 3, 2, ["cache/ SecretCache + CacheCore", "single-flight, stale, never backwards"]),
    "reads": (2, 3, 2, ["api/reads  ReadService", "authorise, limit, audit, count"]),
    "render": (0, 4, 1, ["render/", "templates -> atomic files"]),
    "creds": (1, 4, 1, ["credentials.py", "LoadCredential="]),
    "api": (2, 4, 3, ["api/  (aiohttp: Unix socket + TCP)", "/v1, /secretsmanager, Vault routes"]),
}
ARROWS: list[tuple[str, str]] = [
    ("config", "graph"),
    ("cli", "graph"),
    ("file", "gateway"),
    ("vault", "gateway"),
    ("aws", "gateway"),
    ("gateway", "cache"),
    ("refresh", "cache"),
    ("rotation", "cache"),
    ("cache", "events"),
    ("cache", "reads"),
    ("access", "reads"),
    ("cache", "render"),
    ("cache", "creds"),
    ("reads", "api"),
    ("events", "api"),
]

CELL_W, CELL_H, GAP_X, GAP_Y, PAD = 210, 62, 20, 40, 20
STYLE = (
    "text{font-family:sans-serif;font-size:12px;fill:#1b1f24}"
    ".t{font-weight:bold}"
    "rect{fill:#f4f7fb;stroke:#3d5a80;stroke-width:1.5}"
    "line{stroke:#3d5a80;stroke-width:1.3;marker-end:url(#a)}"
)


def box_rect(name: str) -> tuple[float, float, float, float]:
    col, row, span, _ = BOXES[name]
    x = PAD + col * (CELL_W + GAP_X)
    y = PAD + row * (CELL_H + GAP_Y)
    return x, y, span * CELL_W + (span - 1) * GAP_X, CELL_H


def anchor(name: str, towards: str) -> tuple[float, float]:
    """Where an arrow leaves `name` for `towards`: the middle of the facing side."""
    x, y, w, h = box_rect(name)
    tx, ty, _tw, th = box_rect(towards)
    if ty >= y + h:
        return x + w / 2, y + h
    if ty + th <= y:
        return x + w / 2, y
    return (x + w, y + h / 2) if tx > x else (x, y + h / 2)


def render() -> str:
    cols = max(c + s for c, _, s, _ in BOXES.values())
    rows = max(r for _, r, _, _ in BOXES.values()) + 1
    width = 2 * PAD + cols * CELL_W + (cols - 1) * GAP_X
    height = 2 * PAD + rows * CELL_H + (rows - 1) * GAP_Y
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f"<style>{STYLE}</style>",
        '<defs><marker id="a" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#3d5a80"/>'
        "</marker></defs>",
    ]
    for name, (_, _, _, lines) in BOXES.items():
        x, y, w, h = box_rect(name)
        parts.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6"/>')
        for i, line in enumerate(lines):
            cls = ' class="t"' if i == 0 else ""
            ty = y + 24 + i * 18
            parts.append(
                f'<text x="{x + w / 2}" y="{ty}" text-anchor="middle"{cls}>{escape(line)}</text>'
            )
    for source, target in ARROWS:
        x1, y1 = anchor(source, target)
        x2, y2 = anchor(target, source)
        parts.append(f'<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}"/>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
