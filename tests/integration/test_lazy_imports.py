"""What a process imports is what its command and config use (docs/performance.md).

Each check runs in a fresh interpreter: the agent's memory and start-up, and
`secretd get`'s start-up, are mostly the modules they import.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("jinja2", "cryptography", "httpx", "secretd_client", "aiobotocore", "asyncpg")


def loaded_after(code: str) -> set[str]:
    """Every module name loaded once `code` ran in a new interpreter."""
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_the_agent_imports_no_client_template_store_or_cloud_modules() -> None:
    loaded = loaded_after(
        "from secretd.cli.main import build_parser\n"
        "build_parser(['agent', '-c', 'x.toml'])\n"
        "import secretd.app"
    )
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)
    unused = {
        "secretd.api.vault_compat",
        "secretd.rotation.rotators.postgresql",
        "secretd.render.jinja",
        "secretd.store.envelope",
        "secretd.backends.vault",
        "secretd.backends.aws",
        "secretd.cli.client_cmds",
    }
    assert not loaded & unused


def test_what_a_config_uses_is_imported_when_it_is_built(tmp_path: Path) -> None:
    template = tmp_path / "t.toml"
    template.write_text(
        f'[agent]\nsocket = "{tmp_path}/s.sock"\nstate_dir = "{tmp_path}/state"\n'
        f'[backends.local]\ntype = "file"\npath = "{tmp_path}/store"\n'
        f'key_file = "{tmp_path}/k"\n'
        f'[[template]]\ndestination = "{tmp_path}/out"\ncontents = "x"\n'
    )
    loaded = loaded_after(
        "from pathlib import Path\n"
        "from secretd.config import load_config\n"
        "from secretd.render.sink import load_sinks\n"
        f"load_sinks(load_config(Path({str(template)!r})).template)"
    )
    assert "jinja2" in loaded  # a text template: Jinja2 compiles it


def test_the_duration_parser_loads_neither_the_config_models_nor_pydantic() -> None:
    loaded = loaded_after("from secretd.durations import parse_duration")
    assert "secretd.config.schema" not in loaded
    assert "secretd.config.rotation" not in loaded
    assert "pydantic" not in loaded
    built = loaded_after("from secretd.config.types import Duration")
    assert "pydantic" in built  # the config's annotated types are pydantic's


def test_a_client_command_imports_only_its_own_module() -> None:
    loaded = loaded_after(
        "from secretd.cli.main import build_parser\nbuild_parser(['get', 'app/db'])"
    )
    cli = {m for m in loaded if m.startswith("secretd.cli.") and m != "secretd.cli.main"}
    assert "secretd.cli.client_cmds" in cli
    assert not cli & {"secretd.cli.agent_cmds", "secretd.cli.store_cmds"}


@pytest.mark.parametrize("argv", [["--help"], ["bogus"]])
def test_help_and_a_wrong_command_still_list_every_command(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "secretd.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    shown = done.stdout + done.stderr
    for command in ("agent", "check", "store", "get", "status", "exec", "render", "rotate"):
        assert command in shown
