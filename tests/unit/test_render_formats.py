"""env and json formats: hostile values read back exactly through POSIX sh and
systemd's EnvironmentFile= rules; what cannot be carried is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secretd.errors import ConfigError, RenderError
from secretd.model import SecretValue
from secretd.render.errors import TemplateError
from secretd.render.formats import parse_vars, quote_env_value, render_env, render_json
from tests.fakes.systemd_envfile import parse_environment_file

HOSTILE = [
    "",
    "plain",
    "line1\nline2\n",
    "\n\n",
    'dq"inside',
    "sq'inside",
    "$HOME ${PATH} $(id) `id`",
    "back\\slash\\",
    "\\\n",
    "trailing spaces   ",
    "   leading",
    "# not a comment",
    "tab\there\r\ncrlf",
    "x\nEVIL=1\n",
    '"\nEVIL=2\n"',
    "{{ 7 * 7 }}",
    "ünïcødé ✓ 🔑",
    '\\$\\`\\"',
]


def _values(**items: str) -> dict[str, SecretValue]:
    return {k: SecretValue(v.encode("utf-8")) for k, v in items.items()}


def _sources(values: dict[str, SecretValue]) -> dict[str, str]:
    return {k: f"s/{k}" for k in values}


def _sh_export(path: Path) -> dict[str, str]:
    """Every exported variable after `set -a; . FILE` in a clean POSIX sh."""
    out = subprocess.run(
        ["env", "-i", "/bin/sh", "-c", 'set -a; . "$1"; env -0', "sh", str(path)],
        capture_output=True,
        check=True,
        timeout=10,
    ).stdout
    pairs = [item.split(b"=", 1) for item in out.split(b"\0") if item]
    found = {k.decode(): v.decode("utf-8") for k, v in pairs}
    found.pop("PWD", None)
    return found


def test_env_file_shape() -> None:
    data = render_env(_values(A="x", B='say "hi" $USER'), sources={"A": "a", "B": "b"})
    assert data == b'A="x"\nB="say \\"hi\\" \\$USER"\n'


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_value_reads_back_through_sh_and_systemd(value: str, tmp_path: Path) -> None:
    values = _values(FIRST=value, SECOND="after")
    path = tmp_path / "app.env"
    path.write_bytes(render_env(values, sources=_sources(values)))
    expected = {"FIRST": value, "SECOND": "after"}
    assert _sh_export(path) == expected
    assert parse_environment_file(path.read_bytes()) == expected


env_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cs",),
        blacklist_characters="\0",
    ),
    max_size=40,
).filter(lambda t: quote_env_value_ok(t))


def quote_env_value_ok(text: str) -> bool:
    try:
        quote_env_value(text, what="t")
    except RenderError:
        return False
    return True


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(first=env_text, second=env_text)
def test_any_value_round_trips_property(first: str, second: str, tmp_path: Path) -> None:
    values = _values(V_ONE=first, V_TWO=second)
    path = tmp_path / "prop.env"
    path.write_bytes(render_env(values, sources=_sources(values)))
    expected = {"V_ONE": first, "V_TWO": second}
    assert _sh_export(path) == expected
    assert parse_environment_file(path.read_bytes()) == expected


@settings(max_examples=300, deadline=None)
@given(value=env_text)
def test_systemd_rules_never_gain_a_variable(value: str) -> None:
    values = _values(ONLY=value)
    parsed = parse_environment_file(render_env(values, sources=_sources(values)))
    assert parsed == {"ONLY": value}


@pytest.mark.parametrize(
    "value,problem",
    [
        ("a\0b", "NUL"),
        ("\ufdd1", "noncharacter"),
        ("x\uffff", "noncharacter"),
        ("\U0001fffe", "noncharacter"),
    ],
)
def test_values_no_env_file_can_carry_are_refused(value: str, problem: str) -> None:
    values = _values(BAD=value)
    with pytest.raises(TemplateError) as info:
        render_env(values, sources={"BAD": "db/app"})
    assert problem in str(info.value)
    assert "BAD" in str(info.value) and "db/app" in str(info.value)
    assert info.value.secret == "db/app"  # kept apart, for health's per-caller view
    # which character it was is part of the value, so it is not said
    assert f"U+{ord(value[-1]):04X}" not in str(info.value)


def test_non_utf8_value_is_refused_without_echoing_it() -> None:
    with pytest.raises(RenderError) as info:
        render_env({"BIN": SecretValue(b"\xff\xfesecret")}, sources={"BIN": "bin/key"})
    assert "secret" not in str(info.value).replace("(secret bin/key)", "")
    assert "bin/key" in str(info.value)


@pytest.mark.parametrize("var", ["1ABC", "A-B", "A B", "", "A=B", "Ä"])
def test_invalid_variable_names_are_config_errors(var: str) -> None:
    with pytest.raises(ConfigError, match="not a valid environment variable name"):
        parse_vars({var: "db/app"}, where="template /x", env=True)


@pytest.mark.parametrize("target", ["", "/abs", "a/../b", "a#", "bad name"])
def test_invalid_targets_are_config_errors(target: str) -> None:
    with pytest.raises(ConfigError, match=r"template /x: vars\.V"):
        parse_vars({"V": target}, where="template /x", env=True)


def test_vars_with_fields() -> None:
    refs = parse_vars({"PW": "db/app#password", "K": "api/key"}, where="t", env=True)
    assert [(r.var, r.secret, r.field) for r in refs] == [
        ("PW", "db/app", "password"),
        ("K", "api/key", None),
    ]


def test_json_names_need_not_be_env_names() -> None:
    refs = parse_vars({"db-password": "db/app"}, where="t", env=False)
    assert refs[0].var == "db-password"


def test_json_object_round_trips() -> None:
    values = _values(a='q"uote\n', b="{{ x }}", c="")
    data = render_json(values, sources=_sources(values))
    assert orjson.loads(data) == {"a": 'q"uote\n', "b": "{{ x }}", "c": ""}
    assert data.endswith(b"\n")


def test_json_refuses_binary_values() -> None:
    with pytest.raises(RenderError, match="k/bin"):
        render_json({"a": SecretValue(b"\xff")}, sources={"a": "k/bin"})
