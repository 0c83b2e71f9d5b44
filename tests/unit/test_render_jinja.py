"""Sandboxed text templates: functions, filters, dependency discovery, values as
data, sandbox escapes, and errors that never carry a value."""

from __future__ import annotations

import base64
import shlex
import subprocess

import orjson
import pytest

from secretd.errors import ConfigError, NotFound, RenderError, SecretdError
from secretd.model import SecretName, SecretValue
from secretd.render.errors import TemplateError
from secretd.render.jinja import build_environment, compile_template, render_text

CANARY = "canary-7f3a9e-value"

SECRETS = {
    "db/app": '{"user": "app", "password": "' + CANARY + '", "port": 5432}',
    "api/key": CANARY,
    "evil/tpl": "{{ 7 * 7 }}{% raw %}x{% endraw %}{{ secret('api/key') }}",
    "bin/blob": b"\xff\x00\xfe",
}


class Fetcher:
    """Serves SECRETS and records every (name, stage) asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, name: SecretName, stage: str) -> SecretValue:
        self.asked.append((name, stage))
        raw = SECRETS.get(name)
        if raw is None:
            raise NotFound(f"secret {name} not found")
        return SecretValue(raw if isinstance(raw, bytes) else raw.encode("utf-8"))


async def render(source: str) -> tuple[str, Fetcher]:
    fetch = Fetcher()
    compiled = compile_template(build_environment(), source, origin="/etc/t.j2")
    out = await render_text(compiled, fetch)
    return out.decode("utf-8"), fetch


async def test_secret_field_and_json() -> None:
    out, fetch = await render(
        "u={{ secret('db/app', field='user') }} p={{ secret('db/app', 'port') }} "
        "j={{ secret_json('db/app').user }}\n"
    )
    assert out == "u=app p=5432 j=app\n"
    assert {name for name, _ in fetch.asked} == {"db/app"}


async def test_stage_is_passed_through() -> None:
    _, fetch = await render("{{ secret('api/key', stage='previous') }}")
    assert fetch.asked == [("api/key", "previous")]


async def test_values_are_data_never_templates() -> None:
    out, _ = await render("{{ secret('evil/tpl') }}")
    assert out == SECRETS["evil/tpl"]


async def test_filters() -> None:
    out, _ = await render(
        "{{ secret('api/key') | b64encode }}|{{ 'aGk=' | b64decode }}|"
        "{{ secret_json('db/app') | json }}|{{ \"it's\" | shell_quote }}|{{ 'a\"$b' | env_quote }}"
    )
    b64, decoded, as_json, shell, env = out.split("|")
    assert base64.b64decode(b64).decode() == CANARY
    assert decoded == "hi"
    assert orjson.loads(as_json)["port"] == 5432
    assert shlex.split(shell) == ["it's"]
    assert env == '"a\\"\\$b"'


async def test_shell_quote_survives_sh() -> None:
    hostile = "$(touch /tmp/pwned) `id` ' \" \n;"
    out, _ = await render("{{ v | shell_quote }}".replace("v", repr(hostile)))
    echoed = subprocess.run(
        ["/bin/sh", "-c", f"printf %s {out}"], capture_output=True, check=True, timeout=10
    )
    assert echoed.stdout.decode() == hostile


async def test_undefined_names_are_errors() -> None:
    with pytest.raises(RenderError, match="line 2: undefined"):
        await render("ok\n{{ nope }}\n")


async def test_missing_secret_names_template_line_and_secret() -> None:
    with pytest.raises(
        TemplateError, match=r"^/etc/t\.j2: line 2: secret gone/x not found"
    ) as info:
        await render("x\n{{ secret('gone/x') }}")
    assert info.value.secret == "gone/x" and info.value.cause == "not_found"


async def test_invalid_name_in_template() -> None:
    with pytest.raises(SecretdError, match="invalid secret name"):
        await render("{{ secret('../etc/passwd') }}")


async def test_missing_field_names_secret_and_field() -> None:
    with pytest.raises(RenderError, match=r"db/app.*nofield"):
        await render("{{ secret('db/app', field='nofield') }}")


async def test_binary_value_is_an_error_in_text() -> None:
    with pytest.raises(RenderError, match="bin/blob: value is not UTF-8"):
        await render("{{ secret('bin/blob') }}")


def test_syntax_error_is_config_error_with_path_and_line() -> None:
    with pytest.raises(ConfigError, match=r"^/etc/t\.j2:3: template syntax error"):
        compile_template(build_environment(), "a\nb\n{% if %}\n", origin="/etc/t.j2")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ secret('api/key').__class__ }}",
        "{{ ''|attr('__class__') }}",
        "{{ (secret('api/key')|attr('__class__')).__mro__ }}",
        "{{ '{0.__class__}'.format(secret('api/key')) }}",
        "{{ 'x'.format_map }}{{ ''.__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ range(10**9) | list }}",
        "{{ 2 ** 100000 }}",
        "{{ 'x' * 1000000000 }}",
        "{{ lipsum() }}",
        "{{ self.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__['os'] }}",
        "{{ secret.__globals__ }}",
        "{{ secret_json('db/app')[secret('api/key')] }}",
        "{{ {}.pop(secret('api/key')) }}",
        "{{ secret('api/key') ~ 1 + 1 }}",
    ],
)
async def test_sandbox_escapes_fail_without_output_or_values(source: str) -> None:
    with pytest.raises(SecretdError) as info:
        await render(source)
    message = str(info.value)
    assert CANARY not in message
    assert "<class" not in message and "__globals__" not in message


async def test_dependencies_are_discovered_even_on_failure() -> None:
    fetch = Fetcher()
    compiled = compile_template(
        build_environment(), "{{ secret('api/key') }}{{ secret('gone/x') }}", origin="t"
    )
    with pytest.raises(TemplateError):
        await render_text(compiled, fetch)
    assert [name for name, _ in fetch.asked] == ["api/key", "gone/x"]


async def test_only_the_branch_taken_is_a_dependency() -> None:
    _, fetch = await render(
        "{% if false %}{{ secret('db/app') }}{% endif %}{{ secret('api/key') }}"
    )
    assert [name for name, _ in fetch.asked] == ["api/key"]


async def test_trailing_newline_kept() -> None:
    out, _ = await render("line\n")
    assert out == "line\n"


@pytest.mark.parametrize(
    "source,kind",
    [
        ("{{ secret('db/app', field=secret('api/key')) }}", "field"),
        ("{{ secret(secret('api/key')) }}", "name"),
        ("{{ secret('db/app', stage=secret('api/key')) }}", "stage"),
        ("{{ secret_json(secret('api/key')) }}", "name"),
        ("{{ secret_json('db/app', stage=secret('api/key')) }}", "stage"),
        ("{% set n = secret('api/key') %}{{ secret('db/' ~ n) }}", "name"),
        ("{% for f in [secret('api/key')] %}{{ secret('db/app', f) }}{% endfor %}", "field"),
    ],
)
async def test_a_value_never_becomes_a_name_field_or_stage(source: str, kind: str) -> None:
    """consul-template CVE-2022-38149: `secret(secret(x))` quoted x's value in the
    error. A computed argument is refused unread, by an error that does not quote it."""
    fetch = Fetcher()
    compiled = compile_template(build_environment(), "\n" + source, origin="/etc/t.j2")
    with pytest.raises(TemplateError) as info:
        await render_text(compiled, fetch)
    message = str(info.value)
    assert CANARY not in message and CANARY not in repr(info.value)
    assert f"the {kind} is computed while rendering" in message
    assert message.startswith("/etc/t.j2: line 2: ")
    assert all(name != CANARY for name, _ in fetch.asked)  # never looked up
    assert all(stage != CANARY for _, stage in fetch.asked)


@pytest.mark.parametrize(
    "source",
    [
        "{% for n in ['db/app', 'api/key'] %}{{ secret(n)|length }},{% endfor %}",
        "{% set f = {'name': 'user'} %}{{ secret('db/app', field=f.name) }}",
        "{{ secret('db/' ~ 'app', 'user') }}",
        "{% for s in ('current', 'previous') %}{{ secret('api/key', stage=s)|length }}{% endfor %}",
        "{% set st = 'custom-label' %}{{ secret('api/key', stage=st) }}",
    ],
)
async def test_names_fields_and_stages_written_in_the_template_may_be_computed(
    source: str,
) -> None:
    out, fetch = await render(source)
    assert out
    assert {name for name, _ in fetch.asked} <= {"db/app", "api/key"}


async def test_errors_about_written_arguments_name_them() -> None:
    with pytest.raises(TemplateError, match=r"secret db/app: the secret has no field 'nope'"):
        await render("{{ secret('db/app', field='nope') }}")
    with pytest.raises(TemplateError, match=r"the field must be a string") as info:
        await render("{{ secret('db/app', field=5) }}")
    assert info.value.secret is None


def test_the_reads_a_template_writes_are_known_before_rendering() -> None:
    """What `secretd check` resolves: written names, fields and stages (constant
    expressions too, and `secret_json(...)["key"]`); computed ones are counted."""
    source = (
        "{{ secret('db/app', 'password') }}\n"
        "{{ secret('db/' ~ 'old', field='user', stage='previous') }}\n"
        "{% for n in names %}{{ secret(n) }}{% endfor %}\n"
        "{{ secret_json('api/k')['token'] }}{{ secret_json('api/j').user }}\n"
        "{% for k, v in secret_json('api/all').items() %}{{ k }}{% endfor %}\n"
    )
    compiled = compile_template(build_environment(), source, origin="t.j2")
    assert [(r.secret, r.field, r.stage, r.line, r.json_object) for r in compiled.reads] == [
        ("db/app", "password", "current", 1, False),
        ("db/old", "user", "previous", 2, False),
        ("api/k", "token", "current", 4, True),
        ("api/j", "user", "current", 4, True),
        ("api/all", None, "current", 5, True),
    ]
    assert compiled.computed_reads == 1
