"""docs/operating.md's `.path` pattern, its units taken from the guide as
written: after a rotation (`secretd store put`) the template's command (in
rig.base_config, as in the guide) touches a stamp, the root `.path` unit sees
it and `systemctl try-restart`s the app, which starts again with the new value
from its `EnvironmentFile=`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.system.install import REPO
from tests.system.rig import Rig, eventually

pytestmark = pytest.mark.timeout(300)

GUIDE = REPO / "docs/operating.md"


def documented(path: str) -> str:
    """The ```ini block of docs/operating.md that starts `# <path>`: run as written."""
    for block in re.findall(r"```ini\n(.*?)```", GUIDE.read_text(), re.S):
        if block.splitlines()[0] == f"# {path}":
            return str(block)
    raise AssertionError(f"docs/operating.md shows no {path}")


def seen(report: Path) -> tuple[int, bytes] | None:
    """(pid, ROTATING) as the app reported them at its start, or None."""
    try:
        data = json.loads(report.read_text())
    except FileNotFoundError:
        return None
    return data["pid"], bytes.fromhex(data["env"]["ROTATING"])


def test_a_rotation_restarts_the_app_through_the_path_unit(rig: Rig) -> None:
    rig.put("app/rotating", b"before-rotation")
    rig.serving()
    eventually(
        lambda: "before-rotation" in rig.machine.run("cat", "/run/secretd/app.env").stdout,
        30,
        "app.env rendered with the current value",
    )
    report = rig.out / "app.json"
    rig.add_unit(
        "app.service",
        "[Unit]\nAfter=secretd.service\nWants=secretd.service\n\n"
        "[Service]\nEnvironmentFile=/run/secretd/app.env\n"
        f"ExecStart=/usr/bin/python3 {rig.run_dir}/bin/dump-environment.py --stay "
        f"{report} ROTATING\n",
    )
    for name in ("app-secrets.path", "app-secrets.service"):
        rig.add_unit(name, documented(f"/etc/systemd/system/{name}"))
    rig.machine.systemctl("start", "app-secrets.path", "app.service")
    eventually(lambda: seen(report) is not None, 30, "app.service reports its environment")
    first = seen(report)
    assert first is not None and first[1] == b"before-rotation"

    rig.put("app/rotating", b"after-rotation")
    eventually(
        lambda: (seen(report) or (0, b""))[1] == b"after-rotation", 60, "app.service restarted"
    )
    second = seen(report)
    assert second is not None and second[0] != first[0]  # a new process, not a re-read
    assert rig.machine.state("app.service") == "active"
    restarter = rig.machine.show("app-secrets.service", "Result", "ExecMainStartTimestamp")
    assert restarter["Result"] == "success" and restarter["ExecMainStartTimestamp"]  # it ran
    rig.machine.systemctl("stop", "app-secrets.path", "app.service")
