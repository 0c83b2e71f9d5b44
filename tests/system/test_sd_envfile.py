"""A rendered env file read by systemd's own `EnvironmentFile=` parser: every
value, whatever it holds, reaches the unit's process byte for byte."""

from __future__ import annotations

import json

import pytest

from tests.system.rig import ODD_VALUES, Rig

pytestmark = pytest.mark.timeout(300)


def test_environment_file_values_reach_the_unit_byte_exact(rig: Rig) -> None:
    rig.serving()
    rig.machine.run("test", "-s", "/run/secretd/odd.env")  # rendered before READY=1
    out = rig.out / "env-odd.json"
    rig.add_unit(
        "env-odd.service",
        "[Unit]\nAfter=secretd.service\nWants=secretd.service\n\n"
        "[Service]\nType=oneshot\nEnvironmentFile=/run/secretd/odd.env\n"
        f"ExecStart=/usr/bin/python3 {rig.run_dir}/bin/dump-environment.py {out} "
        + " ".join(ODD_VALUES)
        + "\n",
    )
    rig.machine.systemctl("start", "env-odd.service")
    seen = {k: bytes.fromhex(v) for k, v in json.loads(out.read_text())["env"].items()}
    assert seen == {k: v.encode() for k, v in ODD_VALUES.items()}
