"""Config parsing: good configs load; every bad one names the key path."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from secretd.config import load_config, parse_config
from secretd.errors import ConfigError

FILE = '[backends.local]\ntype = "file"\npath = "store"\n'


def test_minimal_config_has_defaults(tmp_path: Path) -> None:
    cfg = parse_config(FILE, base_dir=tmp_path)
    assert cfg.cache.refresh_interval == 300.0
    assert cfg.limits.max_secret_bytes == 65536
    backend = cfg.backends["local"]
    assert backend.type == "file"
    assert backend.path == tmp_path / "store"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[cache]\nrefresh_interval = 5\n" + FILE, "cache.refresh_interval: expected a duration"),
        ('[cache]\nmax_stale = "5 minutes"\n' + FILE, "cache.max_stale: expected a duration"),
        ('[agent]\nsocket_mode = "0999"\n' + FILE, "agent.socket_mode: expected a file mode"),
        ("[agent]\nbogus = 1\n" + FILE, "agent.bogus: unknown key"),
        ('[tcp]\nlisten = "0.0.0.0:2773"\ntoken_file = "t"\n' + FILE, "tcp.listen"),
        ('[tcp]\nlisten = "10.0.0.1:2773"\ntoken_file = "t"\n' + FILE, "not a loopback"),
        ('[[secret]]\nname = "a//b"\n' + FILE, "secret[0].name"),
        ('[[allow]]\nsecrets = ["x"]\n' + FILE, "allow[0]"),
        ('[backends.v]\ntype = "vault"\naddress = "x"\nauth = {method = "token"}\n', "backends.v"),
        ('[backends.x]\ntype = "nope"\n', "backends.x"),
        ("[backends]\n", "backends"),
        ("not toml [", "invalid TOML"),
        (
            FILE + '[backends.other]\ntype = "file"\npath = "s2"\n',
            "share mount",
        ),
        (
            FILE + '[[template]]\ndestination = "/tmp/x"\nformat = "env"\n',
            "needs a non-empty 'vars'",
        ),
    ],
)
def test_bad_config_names_the_key(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="bad.toml")
    assert re.match(r"bad\.toml(:\d+:\d+)?: ", str(info.value))
    assert expected in str(info.value)


def test_error_never_echoes_values() -> None:
    canary = "CANARY-c0nf1g-value"
    with pytest.raises(ConfigError) as info:
        parse_config(f'[agent]\nlog_level = "{canary}"\n' + FILE, source="c.toml")
    assert canary not in str(info.value)


def test_world_writable_config_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(FILE)
    os.chmod(path, 0o666)
    with pytest.raises(ConfigError, match="lets others write"):
        load_config(path)
    os.chmod(path, 0o644)
    assert load_config(path).backends["local"].type == "file"


def test_symlinked_config_refused_when_others_can_write_on_the_way(tmp_path: Path) -> None:
    real = tmp_path / "real" / "c.toml"
    real.parent.mkdir()
    real.write_text(FILE)
    os.chmod(real, 0o600)
    real.parent.chmod(0o770)  # the target's directory: the group could swap the file
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    with pytest.raises(ConfigError, match=r"symlink.*real is writable by group or others"):
        load_config(link)
    real.parent.chmod(0o755)
    assert load_config(link).backends["local"].type == "file"


@pytest.mark.parametrize(
    "line",
    [
        '[cache]\nrefresh_interval = "{v}"\n',
        '[agent]\nsocket_mode = "{v}"\n',
        '[tcp]\nlisten = "{v}:1"\ntoken_file = "t"\n',
        '[tcp]\nlisten = "{v}"\ntoken_file = "t"\n',
    ],
)
def test_no_validator_echoes_the_value(line: str) -> None:
    canary = "CANARY-c0nf1g-value"
    with pytest.raises(ConfigError) as info:
        parse_config(line.format(v=canary) + FILE, source="c.toml")
    assert canary not in str(info.value)
