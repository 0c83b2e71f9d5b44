"""The one source of truth for published figures: docs/performance-figures.json.

`make bench` (tests/bench/__main__.py) runs every benchmark with
`SECRETD_BENCH_RUN` naming a fresh file; each benchmark `record()`s its figures
there as it prints them. When the whole run is over, the file becomes
docs/performance-figures.json (with when, where and under what load it ran),
and the figures tables of README.md and docs/performance.md are generated
from it, between their `figures:*` markers:

    .venv/bin/python -m tests.bench.figures          # regenerate the tables only
    .venv/bin/python -m tests.bench.figures --check  # exit 1 if a table is stale

A benchmark run on its own (`python -m tests.bench.bench_api`) prints and
records nothing. tests/unit/test_figures_doc.py holds the tables to the file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "docs" / "performance-figures.json"
RUN_ENV = "SECRETD_BENCH_RUN"
MISSING = "–"


def record(bench: str, figures: Mapping[str, Any]) -> None:
    """Add `figures` under `bench` to the run `make bench` is making (else nothing)."""
    target = os.environ.get(RUN_ENV)
    if not target:
        return
    path = Path(target)
    run = json.loads(path.read_text()) if path.exists() else {}
    run.setdefault(bench, {}).update(figures)
    path.write_text(json.dumps(run, indent=1, sort_keys=True) + "\n")


def dig(doc: Mapping[str, Any], *keys: str) -> Any:
    """doc[k1][k2]..., or None when any is missing."""
    found: Any = doc
    for key in keys:
        if not isinstance(found, Mapping) or key not in found:
            return None
        found = found[key]
    return found


def _num(value: Any, fmt: str = "{:,.0f}", unit: str = "") -> str:
    if not isinstance(value, int | float):
        return MISSING
    return fmt.format(value) + unit


def _kilo(value: Any) -> str:
    return _num(value / 1000 if isinstance(value, int | float) else None, "{:.1f}k")


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or not b:
        return MISSING
    return f"{a / b:.2f}"


def _read_row(doc: Mapping[str, Any], conc: str) -> list[str]:
    row = dig(doc, "api", "reads", conc) or {}
    ours, bare, raw = (row.get(k) or {} for k in ("secretd", "aiohttp", "raw"))
    return [
        f"cached read over the Unix socket, concurrency {conc}",
        f"{_kilo(ours.get('rps'))} req/s, p99 {_num(ours.get('p99_ms'), '{:.2f}')} ms",
        f"bare aiohttp {_kilo(bare.get('rps'))} (p99 {_num(bare.get('p99_ms'), '{:.2f}')} ms);"
        f" raw uvloop {_kilo(raw.get('rps'))}",
        f"{_ratio(ours.get('rps'), bare.get('rps'))}×"
        + (f" (p99 {_ratio(ours.get('p99_ms'), bare.get('p99_ms'))}×)" if conc == "16" else ""),
    ]


def _seconds(ms: Any) -> str:
    return _num(ms / 1000 if isinstance(ms, int | float) else None, "{:.2f}", " s")


def readme_table(doc: Mapping[str, Any]) -> str:
    """The README's figures: each next to its reference, from one run."""
    rows = [["what", "secretd", "reference (same run)", "secretd / reference"]]
    rows += [_read_row(doc, conc) for conc in ("1", "16", "64")]
    rows += [_instructions_row(doc), _startup_row(doc), *_footprint_rows(doc)]
    rows += _propagation_rows(doc)
    aws = dig(doc, "aws_calls") or {}
    rows.append(
        [
            "AWS API calls in one hour, 1,000 declared secrets, `refresh_interval = 5m`",
            _num(aws.get("engine")),
            f"AWS agent model {_num(aws.get('model'))}",
            _ratio(aws.get("engine"), aws.get("model")) + "×",
        ]
    )
    return _table(rows)


def _instructions_row(doc: Mapping[str, Any]) -> list[str]:
    ours = dig(doc, "instructions", "per_read", "secretd")
    bare = dig(doc, "instructions", "per_read", "aiohttp")
    return [
        "user-space instructions per cached read (valgrind; immune to the machine's load)",
        _num(ours),
        f"bare aiohttp {_num(bare)}",
        f"{_ratio(bare, ours)}× (bare / secretd)",
    ]


def _startup_row(doc: Mapping[str, Any]) -> list[str]:
    start = dig(doc, "vault", "startup_ms") or {}
    count = dig(doc, "vault", "startup_secrets")
    return [
        f"start-up with {_num(count)} declared Vault secrets (exec → READY=1, best of runs)",
        _seconds(dig(start, "secretd", "best")),
        f"`bao agent` {_seconds(dig(start, 'bao_agent', 'best'))} (to its file)",
        _ratio(dig(start, "secretd", "best"), dig(start, "bao_agent", "best")) + "×",
    ]


def _footprint_rows(doc: Mapping[str, Any]) -> list[list[str]]:
    rss = dig(doc, "api", "rss_mib") or {}
    mib = [_num(rss.get(k), "{:.0f}", " MiB") for k in ("idle", "after_burst", "cached")]
    cli = dig(doc, "cli") or {}
    return [
        [
            "RSS: idle / after the c=64 read runs / with 10,000 cached 1 KiB secrets",
            " / ".join(mib),
            "",
            "",
        ],
        [
            "`secretd get NAME` (a process, start to exit)",
            _num(dig(cli, "get_ms", "p50"), "{:.0f}", " ms"),
            f"`python -c pass` {_num(dig(cli, 'python_ms', 'p50'), '{:.0f}', ' ms')}",
            "",
        ],
    ]


def _propagation_rows(doc: Mapping[str, Any]) -> list[list[str]]:
    render = dig(doc, "render", "put_to_file_ms") or {}
    waits = ("default (50ms/1s)", "min 10ms")
    poll = dig(doc, "api", "long_poll_ms") or {}
    return [
        [
            "store put → rendered file, p99 (default `wait` / `wait.min = 10ms`)",
            " / ".join(_num(dig(render, k, "p99"), "{:.0f}", " ms") for k in waits),
            "",
            "",
        ],
        [
            "store put → long-poll answer, p99 (after an in-process put returns)",
            _num(poll.get("p99"), "{:.1f}", " ms"),
            "",
            "",
        ],
        [
            "backend reads for 256 concurrent cold requests of one secret",
            _num(dig(doc, "api", "cold_backend_reads")),
            "",
            "",
        ],
    ]


def performance_tables(doc: Mapping[str, Any]) -> str:
    """docs/performance.md's detailed tables."""
    parts = [
        _run_line(doc),
        "",
        "**Cached reads** (docs/performance.md, method):",
        "",
        _reads_table(doc),
        "",
        "**Next to OpenBao Agent** on one `bao server -dev`:",
        "",
        _vault_table(doc),
        "",
        "**Memory and the CLI:**",
        "",
        _memory_table(doc),
        "",
        "**Where the agent's idle memory and `secretd get`'s start-up go** (imports,"
        " step by step, each in a fresh interpreter; best of three):",
        "",
        _imports_table(doc),
    ]
    return "\n".join(parts)


def _imports_table(doc: Mapping[str, Any]) -> str:
    rows = [["process", "step", "RSS added", "time"]]
    for key, label in (("agent", "agent (file store)"), ("get", "`secretd get`")):
        total = 0.0
        for step in dig(doc, "imports", key) or []:
            total += step["rss_mib"]
            rows.append(
                [
                    label,
                    step["step"],
                    f"+{step['rss_mib']:.1f} MiB (= {total:.1f})",
                    _num(step["ms"], "{:.0f}", " ms"),
                ]
            )
    return _table(rows)


def _run_line(doc: Mapping[str, Any]) -> str:
    run = doc.get("run") or {}
    loads = run.get("load") or {}
    shown = ", ".join(f"{k} {v[0]:.1f}→{v[1]:.1f}" for k, v in sorted(loads.items()))
    return (
        f"Run of {run.get('date', MISSING)} at commit `{run.get('commit', MISSING)}`,"
        f" {run.get('cpus', MISSING)} CPUs, Python {run.get('python', MISSING)},"
        f" aiohttp {run.get('aiohttp', MISSING)}; load average before→after each bench: {shown}."
    )


def _reads_table(doc: Mapping[str, Any]) -> str:
    rows = [
        [
            "concurrency",
            "server",
            "req/s (best round)",
            "p50 ms",
            "p99 ms",
            "vs bare aiohttp",
            "median round: req/s, vs bare",
        ]
    ]
    servers = (("secretd", "secretd"), ("aiohttp", "bare aiohttp"), ("raw", "raw uvloop"))
    for conc in ("1", "16", "64"):
        row = dig(doc, "api", "reads", conc) or {}
        bare = row.get("aiohttp") or {}
        for key, label in servers:
            got = row.get(key) or {}
            rows.append(
                [
                    conc,
                    label,
                    _num(got.get("rps")),
                    _num(got.get("p50_ms"), "{:.3f}"),
                    _num(got.get("p99_ms"), "{:.3f}"),
                    _ratio(got.get("rps"), bare.get("rps")),
                    f"{_num(got.get('median_rps'))},"
                    f" {_ratio(got.get('median_rps'), bare.get('median_rps'))}",
                ]
            )
    return _table(rows)


def _vault_table(doc: Mapping[str, Any]) -> str:
    vault = doc.get("vault") or {}
    rows = [["on one `bao server -dev`", "secretd", "bao agent"]]
    for conc in ("16", "64"):
        pair = dig(vault, "reads", conc) or {}
        rows.append(
            [f"cached reads, concurrency {conc}"]
            + [_rate(dig(pair, k)) for k in ("secretd", "bao_agent")]
        )
    rows.append(
        ["write → rendered file, median (each at its fastest settings)"]
        + [
            _num(dig(vault, "propagation_ms", k, "median"), "{:.0f}", " ms")
            for k in ("secretd", "bao_agent")
        ]
    )
    runs = dig(vault, "startup_ms") or {}
    rows.append(
        [f"start-up, {_num(vault.get('startup_secrets'))} declared secrets (best / median of runs)"]
        + [
            f"{_seconds(dig(runs, k, 'best'))} / {_seconds(dig(runs, k, 'median'))}"
            for k in ("secretd", "bao_agent")
        ]
    )
    return _table(rows)


def _rate(got: Any) -> str:
    rps, p99 = dig(got or {}, "rps"), dig(got or {}, "p99_ms")
    return f"{_num(rps)} req/s, p99 {_num(p99, '{:.1f}')} ms"


def _memory_table(doc: Mapping[str, Any]) -> str:
    rss = dig(doc, "api", "rss_mib") or {}
    cli = doc.get("cli") or {}
    rows = [
        ["figure", "value"],
        ["RSS idle (file store, audit on)", _num(rss.get("idle"), "{:.1f}", " MiB")],
        ["RSS after the c=64 read runs", _num(rss.get("after_burst"), "{:.1f}", " MiB")],
        ["RSS with 10,000 cached 1 KiB secrets", _num(rss.get("cached"), "{:.1f}", " MiB")],
        [
            "RSS idle, Vault backend, 100 declared secrets (no file store: no cryptography)",
            _num(dig(doc, "vault", "rss_idle_mib"), "{:.1f}", " MiB"),
        ],
        ["`secretd get`, p50 / best", _cli(cli, "get_ms")],
        ["`python -c pass`, p50 / best", _cli(cli, "python_ms")],
    ]
    return _table(rows)


def _cli(cli: Mapping[str, Any], key: str) -> str:
    return (
        f"{_num(dig(cli, key, 'p50'), '{:.0f}', ' ms')} / "
        f"{_num(dig(cli, key, 'best'), '{:.0f}', ' ms')}"
    )


def _table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell or " " for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


# name -> (file, renderer): the blocks generated from the figures file.
BLOCKS: dict[str, tuple[Path, Callable[[Mapping[str, Any]], str]]] = {
    "readme": (ROOT / "README.md", readme_table),
    "performance": (ROOT / "docs" / "performance.md", performance_tables),
}


def _markers(name: str) -> tuple[str, str]:
    return (
        f"<!-- figures:{name}:begin (generated from docs/performance-figures.json"
        " by `python -m tests.bench.figures`; do not edit) -->",
        f"<!-- figures:{name}:end -->",
    )


def render_block(text: str, name: str, body: str) -> str:
    """`text` with the block between `name`'s markers replaced by `body`."""
    begin, end = _markers(name)
    head, found, rest = text.partition(begin)
    if not found or end not in rest:
        raise ValueError(f"no figures:{name} markers")
    _, _, tail = rest.partition(end)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def regenerate(*, check: bool = False) -> list[Path]:
    """Rewrite every generated block from FIGURES; the files that were (or, with
    `check`, would be) changed."""
    doc = json.loads(FIGURES.read_text())
    stale = []
    for name, (path, renderer) in BLOCKS.items():
        text = path.read_text()
        new = render_block(text, name, renderer(doc))
        if new != text:
            stale.append(path)
            if not check:
                path.write_text(new)
    return stale


def main(argv: list[str]) -> int:
    stale = regenerate(check="--check" in argv)
    for path in stale:
        print(f"{'stale' if '--check' in argv else 'regenerated'}: {path.relative_to(ROOT)}")
    return 1 if stale and "--check" in argv else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
