"""How `secretd status` shows rotations (secretd.cli.client_status.render_rotations):
one row per rotated secret, failures loud, hostile text flattened."""

from __future__ import annotations

from secretd.cli.client_status import render_rotations


def test_rows_show_last_result_and_next_due() -> None:
    text = render_rotations(
        [
            {
                "name": "db/app",
                "rotator": "postgresql",
                "last_rotated_at": "2026-01-01T00:00:00.000Z",
                "last_result": "rotated",
                "last_error": None,
                "next_at": "2026-01-31T00:20:00.000Z",
                "running": False,
            },
            {
                "name": "api/key",
                "rotator": "command",
                "last_rotated_at": None,
                "last_result": "failed",
                "last_error": "step test: test command /bin/x exited with status 1",
                "next_at": "2026-01-01T00:01:00.000Z",
                "running": False,
            },
            {"name": "svc/k", "rotator": "random", "running": True},
        ],
        None,
    )
    lines = text.splitlines()
    assert lines[1] == "rotations:"
    assert lines[2].split() == [
        "NAME",
        "ROTATOR",
        "LAST",
        "ROTATED",
        "RESULT",
        "NEXT",
        "LAST",
        "ERROR",
    ]
    assert lines[3].split()[:5] == [
        "db/app",
        "postgresql",
        "2026-01-01T00:00:00.000Z",
        "rotated",
        "2026-01-31T00:20:00.000Z",
    ]
    assert lines[4].split()[:4] == ["api/key", "command", "never", "FAILED"]
    assert lines[4].endswith("test command /bin/x exited with status 1")
    assert lines[5].split()[:4] == ["svc/k", "random", "never", "running"]


def test_no_rotations_and_unreachable_listing() -> None:
    assert render_rotations([], None).strip() == "rotations: none"
    assert render_rotations(None, "forbidden").strip() == "rotations: not listed: forbidden"


def test_hostile_text_cannot_paint_the_terminal() -> None:
    text = render_rotations(
        [{"name": "x", "rotator": "random", "last_error": "\x1b[2Jboom\nnext line"}], None
    )
    assert "\x1b" not in text
    assert "next line" in text.splitlines()[3]
