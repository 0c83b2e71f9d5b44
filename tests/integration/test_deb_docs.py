"""The shipped example config and the operating guide's unit examples, checked
by the tools an operator would use: `secretd check` and `systemd-analyze verify`.

Needs neither root nor dpkg (see test_deb.py for the package itself).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "packaging/secretd.toml.example"
GUIDE = REPO / "docs/operating.md"


def test_every_commented_example_in_the_shipped_config_is_valid(tmp_path: Path) -> None:
    """Uncommenting the example's [[...]] entries must give a config `check` accepts.

    Runs with the dev venv's secretd, not the package, and needs no root.
    """
    text = re.sub(r"^# (\[\[\w+\]\])$", r"\1", EXAMPLE.read_text(), flags=re.M)
    keys = r"mlock|credentials_socket|name|secrets|units|destination|format|vars|command|unit|id"
    keys += r"|secret|field|rotator|every|admin_secret|roles|member_of|grace|length"
    text = re.sub(rf"^# ((?:{keys}) = )", r"\1", text, flags=re.M)
    assert text.count("[[") >= 4, "the example lost its commented [[...]] entries"
    group = subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout
    text = text.replace('socket_group = "secretd"', f'socket_group = "{group.strip()}"')
    text = text.replace("/var/lib/secretd/store", str(tmp_path / "store"))
    text = text.replace("/etc/secretd/store.key", str(tmp_path / "store.key"))
    text = text.replace("/var/log/secretd/audit.jsonl", str(tmp_path / "audit.jsonl"))
    text = text.replace("/run/secretd/", f"{tmp_path}/")
    config = tmp_path / "secretd.toml"
    config.write_text(text)
    secretd = str(Path(sys.executable).parent / "secretd")
    store = [
        secretd,
        "store",
        "init",
        str(tmp_path / "store"),
        "--key",
        str(tmp_path / "store.key"),
    ]
    subprocess.run(store, check=True, capture_output=True, timeout=60)
    # The secrets the example's entries name, so `check` can resolve them.
    put = [secretd, "store", "put", str(tmp_path / "store"), "db/app"]
    value = b'{"username": "app_a", "password": "pw", "host": "db", "port": 5432, "dbname": "app"}'
    subprocess.run(put, input=value, check=True, capture_output=True, timeout=60)
    result = subprocess.run(
        [secretd, "check", "-c", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rotations = "rotations  2"
    for line in (
        "1 declared: db/app",
        "1 allow rule(s)",
        "templates  1",
        "credentials 1",
        rotations,
    ):
        assert line in result.stdout


def _guide_units(root: Path) -> list[str]:
    """Write every ```ini block of the guide where its first comment line says."""
    placed = []
    for block in re.findall(r"```ini\n(.*?)```", GUIDE.read_text(), re.S):
        first = block.splitlines()[0]
        if first == "# systemctl edit secretd.service":
            target = "/etc/systemd/system/secretd.service.d/override.conf"
        else:
            match = re.fullmatch(r"# (/etc/systemd/system/\S+)", first)
            assert match is not None, f"an ini block without its path: {first!r}"
            target = match.group(1)
        path = root / target.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
        placed.append(target)
    return placed


def test_unit_examples_in_the_guide_verify(tmp_path: Path) -> None:
    """The guide's units and drop-ins, with the packaged units, pass systemd-analyze verify."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    shutil.copytree("/lib/systemd", root / "usr/lib/systemd", symlinks=True)
    for tool in ("/usr/bin/systemctl", "/usr/bin/touch", "/usr/bin/kill", "/usr/bin/test"):
        (root / tool.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tool, root / tool.lstrip("/"))
    (root / "bin").symlink_to("usr/bin")
    stub = root / "usr/bin/secretd"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in (REPO / "packaging/systemd").iterdir():
        shutil.copy(unit, units / unit.name)
    (units / "app.service").write_text("[Service]\nExecStart=/usr/bin/secretd\n")
    placed = _guide_units(root)
    assert len(placed) >= 5, placed
    names = sorted(
        {
            f"/etc/systemd/system/{Path(p).parent.name.removesuffix('.d')}"
            if p.endswith(".conf")
            else p
            for p in placed
        }
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *names],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
