"""Runs `secretd check -c FILE` (the CLI's own `main`) for each path read from
stdin, one JSON line out per path: {"rc", "out", "err"}.

One long-lived process instead of one per example, so the fuzz tier can try
many configs in its time budget; `main` is the same code the executable runs.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

from secretd.cli.main import main


def check(path: str) -> dict[str, object]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code: object = main(["check", "-c", path])
        except SystemExit as exc:  # argparse
            code = exc.code
    return {"rc": code, "out": out.getvalue(), "err": err.getvalue()}


if __name__ == "__main__":
    for line in sys.stdin:
        print(json.dumps(check(line.rstrip("\n"))), flush=True)
