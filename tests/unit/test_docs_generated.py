"""Generated documentation is committed in step with its source."""

from __future__ import annotations

import importlib.util
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
