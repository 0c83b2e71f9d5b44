"""Generated documentation is committed in step with its source."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]


def test_the_architecture_diagram_is_drawn_from_its_text() -> None:
    source = REPO / "docs" / "diagrams" / "architecture.py"
    spec = importlib.util.spec_from_file_location("architecture_diagram", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (REPO / "docs" / "architecture.svg").read_text()
    assert module.render() == committed, "run: python docs/diagrams/architecture.py"


def test_the_figures_tables_are_generated_from_one_bench_run() -> None:
    from tests.bench.figures import FIGURES, regenerate

    assert regenerate(check=True) == [], "run: python -m tests.bench.figures"
    published = orjson.loads(FIGURES.read_bytes())
    assert {"run", "api", "vault", "cli", "render", "instructions"} <= set(published)


def test_the_product_cites_only_what_ships_with_it() -> None:
    """Code, docs and packaging point readers to docs/, never to the design
    notes the project was built from (users do not get those)."""
    cited = re.compile(r"SECURITY\.md|SPEC\.md|DESIGN\.md|\bSPEC §|\.\./shared/")
    roots = ["agent", "sdk", "docs", "packaging", "README.md", "CONTRIBUTING.md"]
    files = [p for r in roots for p in ([REPO / r] if r.endswith(".md") else (REPO / r).rglob("*"))]
    offending = [
        str(path.relative_to(REPO))
        for path in files
        if path.suffix in {".py", ".md", ".toml", ".service", ".socket", ".sh", ".conf"}
        and path.is_file()
        and cited.search(path.read_text(errors="replace"))
    ]
    assert offending == []
