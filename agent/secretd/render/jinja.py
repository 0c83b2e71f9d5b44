"""Text templates: Jinja2 in a sandbox, with undefined names as errors.

A template reads secrets with `secret(name, field=None, stage="current")` and
`secret_json(name)`, and has the filters `env_quote`, `shell_quote`, `json`,
`b64encode` and `b64decode`. The secrets it reads are recorded while it renders:
that set is what the runner subscribes to and pins.

Values are data. A value is only ever the *result* of an expression; Jinja
never parses a result again, so `{{ }}` inside a value comes out literally.

Error messages never carry a value. Jinja's own messages can (an undefined key
named by a value, `int` failing on a value, a refused `|attr(value)`), so for
anything that is not one of our own errors the message says only what kind of
failure happened and at which template line.

Our own messages quote the name, field and stage a template passed to
`secret()`, so those must never come from a value (consul-template
CVE-2022-38149: `secret(secret(x))` put x's value in the error). They are
therefore accepted only when they are strings written in the template itself:
a literal at the call, or one in a list or mapping the template loops over
(constant expressions such as `'db/' ~ 'app'` count too). A computed one is
refused before anything is read, with an error that does not quote it, so a
value can never become a name the cache looks up, logs or audits either. (A
value that happens to equal a string the template writes is used as that
string: whatever an error then says, the template source already says it.)
Every render failure is a `TemplateError` that keeps the secret it is about
apart from its text, so health can show the text only to callers who may
read that secret.
"""

from __future__ import annotations

import base64
import binascii
import shlex
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.optimizer import optimize
from jinja2.sandbox import SandboxedEnvironment

from secretd.errors import ConfigError, SecretdError
from secretd.model import CURRENT, PENDING, PREVIOUS, SecretName, SecretValue
from secretd.render.errors import TemplateError
from secretd.render.formats import quote_env_value
from secretd.render.literal import LiteralRead

# Reads one secret version for a render (the runner's per-cycle memo).
Fetch = Callable[[SecretName, str], Awaitable[SecretValue]]

MAX_OUTPUT_BYTES = 16 * 1024 * 1024
MAX_SEQUENCE_PRODUCT = 1024 * 1024  # "x" * n and [..] * n
MAX_EXPONENT = 1024
_STAGES = frozenset({CURRENT, PREVIOUS, PENDING})


class SecretSandbox(SandboxedEnvironment):
    """The sandbox, plus caps on `**` and `*` so a typo cannot eat the host's memory."""

    intercepted_binops = frozenset({"**", "*"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int) and abs(right) > MAX_EXPONENT:
                raise SecurityError("exponent too large")
            return left**right
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(count, int)
                if sized and len(seq) * count > MAX_SEQUENCE_PRODUCT:
                    raise SecurityError("repeated sequence too large")
            return left * right
        return super().call_binop(context, operator, left, right)


@dataclass(frozen=True, slots=True)
class CompiledTemplate:
    """A parsed template and where it came from (a path, or the destination for `contents`)."""

    origin: str
    template: Any  # jinja2.Template; Any because its render methods are untyped
    literals: frozenset[str]  # every string the source writes (see _Functions)
    reads: tuple[LiteralRead, ...] = ()  # the calls with written arguments, in source order
    computed_reads: int = 0  # calls with an argument computed while rendering


def build_environment() -> SecretSandbox:
    env = SecretSandbox(
        enable_async=True,
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,
    )
    for unused in ("lipsum", "cycler", "joiner"):
        env.globals.pop(unused, None)
    env.filters.update(
        env_quote=env_quote,
        shell_quote=shell_quote,
        json=to_json,
        b64encode=b64encode,
        b64decode=b64decode,
    )
    return env


def compile_template(env: SecretSandbox, source: str, *, origin: str) -> CompiledTemplate:
    """Parse `source`. A syntax error is a ConfigError naming `origin` and the line."""
    try:
        tree = env.parse(source)
        literals = _literals(env, tree)
        # Parsed once: the reads are found on the optimised tree (constants
        # folded, as the compiler folds them), which is then compiled as it is.
        reads, computed = _literal_reads(optimize(tree, env))
        template = env.from_string(tree)
    except TemplateSyntaxError as exc:
        raise ConfigError(f"{origin}:{exc.lineno}: template syntax error: {exc.message}") from None
    template.name = origin
    template.filename = origin
    return CompiledTemplate(origin, template, literals, reads, computed)


def _literal_reads(tree: nodes.Node) -> tuple[tuple[LiteralRead, ...], int]:
    """Every secret()/secret_json() call whose name, field and stage are written
    in the template (constants), and how many other calls there are."""
    reads: list[LiteralRead] = []
    computed = 0
    keyed = _json_keys(tree)
    for call in tree.find_all(nodes.Call):
        if not isinstance(call.node, nodes.Name) or call.node.name not in _READERS:
            continue
        params = _READERS[call.node.name]
        given: dict[str, nodes.Expr] = dict(zip(params, call.args, strict=False))
        given.update({kw.key: kw.value for kw in call.kwargs})
        if call.dyn_args is not None or call.dyn_kwargs is not None:
            computed += 1
            continue
        values = {key: node.value for key, node in given.items() if isinstance(node, nodes.Const)}
        name, field, stage = values.get("name"), values.get("field"), values.get("stage", CURRENT)
        if len(values) != len(given) or not isinstance(name, str) or not isinstance(stage, str):
            computed += 1
            continue
        if field is not None and not isinstance(field, str):
            computed += 1
            continue
        json_object = call.node.name == "secret_json"
        if json_object:
            field = keyed.get(id(call))
        reads.append(LiteralRead(name, field, stage, call.lineno, json_object))
    return tuple(reads), computed


def _json_keys(tree: nodes.Node) -> dict[int, str]:
    """`secret_json('x')['key']` and `secret_json('x').key`: the call's id -> key."""
    keys: dict[int, str] = {}
    for item in tree.find_all(nodes.Getitem):
        key = item.arg.value if isinstance(item.arg, nodes.Const) else None
        if isinstance(item.node, nodes.Call) and isinstance(key, str):
            keys[id(item.node)] = key
    called = {id(call.node) for call in tree.find_all(nodes.Call)}  # `.items()` is no key
    for attr in tree.find_all(nodes.Getattr):
        if isinstance(attr.node, nodes.Call) and id(attr) not in called:
            keys[id(attr.node)] = attr.attr
    return keys


_READERS = {"secret": ("name", "field", "stage"), "secret_json": ("name", "stage")}


def _literals(env: SecretSandbox, tree: nodes.Template) -> frozenset[str]:
    """Every string constant of the template, also those Jinja folds at compile time."""
    found: set[str] = set()
    for root in (tree, optimize(tree, env)):
        for const in root.find_all(nodes.Const):
            _collect_strings(const.value, found)
    return frozenset(found)


def _collect_strings(value: object, into: set[str]) -> None:
    if isinstance(value, str):
        into.add(value)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            _collect_strings(item, into)
    elif isinstance(value, dict):
        for key, item in value.items():
            _collect_strings(key, into)
            _collect_strings(item, into)


async def render_text(compiled: CompiledTemplate, fetch: Fetch) -> bytes:
    """Render `compiled`, reading every secret through `fetch` (which is how the
    caller learns what the template depends on, even when the render fails).

    Raises TemplateError naming the template and line, never with a value inside.
    """
    functions = _Functions(compiled, fetch)
    context = {"secret": functions.secret, "secret_json": functions.secret_json}
    try:
        return await _generate(compiled, context)
    except TemplateError as exc:
        where = _where(exc, compiled.origin)
        raise TemplateError(f"{where}: {exc}", secret=exc.secret, cause=exc.cause) from None
    except SecretdError as exc:
        raise TemplateError(f"{_where(exc, compiled.origin)}: {exc}", cause=exc.code) from None
    except Exception as exc:
        raise TemplateError(f"{_where(exc, compiled.origin)}: {_describe(exc)}") from None


class _Functions:
    """`secret()` and `secret_json()` for one render."""

    def __init__(self, compiled: CompiledTemplate, fetch: Fetch) -> None:
        self._literals = compiled.literals
        self._fetch = fetch

    async def secret(self, name: Any, field: Any = None, stage: Any = CURRENT) -> str:
        secret, value = await self._read(name, stage)
        if field is not None:
            chosen = self._written("field", field, what=f"secret {secret}")
            try:
                value = value.field(chosen)
            except SecretdError as exc:
                raise TemplateError(f"secret {secret}: {exc}", secret=secret) from None
        text = value.text()
        if text is None:
            raise TemplateError(f"secret {secret}: value is not UTF-8 text", secret=secret)
        return text

    async def secret_json(self, name: Any, stage: Any = CURRENT) -> dict[str, Any]:
        secret, value = await self._read(name, stage)
        text = value.text()
        try:
            obj = orjson.loads(text) if text is not None else None
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            raise TemplateError(f"secret {secret}: value is not a JSON object", secret=secret)
        return obj

    async def _read(self, name: Any, stage: Any) -> tuple[SecretName, SecretValue]:
        written = self._written("name", name, what="secret()")
        try:
            secret = SecretName(written)
        except SecretdError as exc:
            raise TemplateError(f"secret(): {exc}", cause=exc.code) from None
        if isinstance(stage, str) and stage in _STAGES:
            chosen = stage
        else:
            chosen = self._written("stage", stage, what=f"secret {secret}")
        try:
            return secret, await self._fetch(secret, chosen)
        except SecretdError as exc:
            raise TemplateError(str(exc), secret=secret, cause=exc.code) from None

    def _written(self, kind: str, argument: Any, *, what: str) -> str:
        """`argument` when it is a string the template wrote; else an error not quoting it."""
        if not isinstance(argument, str):
            raise TemplateError(f"{what}: the {kind} must be a string")
        if argument not in self._literals:
            raise TemplateError(
                f"{what}: the {kind} is computed while rendering, so it is neither used nor "
                f"shown (it could be a secret's value); write it in the template as a string"
            )
        return argument


async def _generate(compiled: CompiledTemplate, context: dict[str, Any]) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in compiled.template.generate_async(context):
        data = chunk.encode("utf-8")
        size += len(data)
        if size > MAX_OUTPUT_BYTES:
            raise TemplateError(f"output exceeds {MAX_OUTPUT_BYTES} bytes")
        parts.append(data)
    return b"".join(parts)


def _where(exc: BaseException, origin: str) -> str:
    """`ORIGIN: line N`, from the template frames Jinja puts in the traceback."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == origin:
            line = frame.lineno
    return f"{origin}: line {line}" if line is not None else f"{origin}: an unknown line"


def _describe(exc: BaseException) -> str:
    """What kind of failure, without the exception's own (maybe value-bearing) text."""
    if isinstance(exc, UndefinedError):
        return "undefined variable, attribute or key"
    if isinstance(exc, SecurityError):
        return "the sandbox refused an unsafe operation"
    if isinstance(exc, OverflowError | MemoryError | RecursionError):
        return f"{type(exc).__name__} (a range or value too large)"
    return f"{type(exc).__name__} while rendering"


def env_quote(value: Any) -> str:
    """`"..."` quoting that both POSIX sh and systemd's EnvironmentFile= read back exactly."""
    return quote_env_value(str(value), what="env_quote")


def shell_quote(value: Any) -> str:
    """POSIX sh single-quoting (`'...'` with `'\\''`). NUL cannot be quoted: an error."""
    text = str(value)
    if "\0" in text:
        raise TemplateError("shell_quote: the value contains a NUL byte")
    return shlex.quote(text)


def to_json(value: Any) -> str:
    """JSON text of a value (strings, numbers, lists, mappings); no HTML escaping."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        raise TemplateError("json: the value cannot be written as JSON") from None


def b64encode(value: Any) -> str:
    return base64.b64encode(str(value).encode("utf-8")).decode("ascii")


def b64decode(value: Any) -> str:
    try:
        raw = base64.b64decode(str(value), validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise TemplateError("b64decode: not base64 of UTF-8 text") from None
