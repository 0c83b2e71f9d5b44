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
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from secretd.errors import ConfigError, InvalidRequest, RenderError, SecretdError
from secretd.model import CURRENT, SecretName, SecretValue
from secretd.render.formats import quote_env_value

# Reads one secret version for a render (the runner's per-cycle memo).
Fetch = Callable[[SecretName, str], Awaitable[SecretValue]]

MAX_OUTPUT_BYTES = 16 * 1024 * 1024
MAX_SEQUENCE_PRODUCT = 1024 * 1024  # "x" * n and [..] * n
MAX_EXPONENT = 1024


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
        template = env.from_string(source)
    except TemplateSyntaxError as exc:
        raise ConfigError(f"{origin}:{exc.lineno}: template syntax error: {exc.message}") from None
    template.name = origin
    template.filename = origin
    return CompiledTemplate(origin=origin, template=template)


async def render_text(compiled: CompiledTemplate, fetch: Fetch) -> bytes:
    """Render `compiled`, reading every secret through `fetch` (which is how the
    caller learns what the template depends on, even when the render fails).

    Raises RenderError (or the SecretdError `fetch` raised), never with a value inside.
    """

    async def secret(name: Any, field: Any = None, stage: Any = CURRENT) -> str:
        value = await _read(name, stage)
        if field is not None:
            if not isinstance(field, str):
                raise RenderError(f"secret {name}: field must be a string")
            try:
                value = value.field(field)
            except InvalidRequest as exc:
                raise RenderError(f"secret {name}: {exc}") from None
        text = value.text()
        if text is None:
            raise RenderError(f"secret {name}: value is not UTF-8 text")
        return text

    async def secret_json(name: Any, stage: Any = CURRENT) -> dict[str, Any]:
        text = (await _read(name, stage)).text()
        try:
            obj = orjson.loads(text) if text is not None else None
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            raise RenderError(f"secret {name}: value is not a JSON object")
        return obj

    async def _read(name: Any, stage: Any) -> SecretValue:
        if not isinstance(name, str) or not isinstance(stage, str):
            raise RenderError("secret(): the name and stage must be strings")
        return await fetch(SecretName(name), stage)

    try:
        return await _generate(compiled, {"secret": secret, "secret_json": secret_json})
    except SecretdError:
        raise
    except Exception as exc:
        raise RenderError(f"{compiled.origin}: {_describe(exc, compiled.origin)}") from None


async def _generate(compiled: CompiledTemplate, context: dict[str, Any]) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in compiled.template.generate_async(context):
        data = chunk.encode("utf-8")
        size += len(data)
        if size > MAX_OUTPUT_BYTES:
            raise RenderError(f"{compiled.origin}: output exceeds {MAX_OUTPUT_BYTES} bytes")
        parts.append(data)
    return b"".join(parts)


def _describe(exc: BaseException, origin: str) -> str:
    """What went wrong and where, without the exception's own (maybe value-bearing) text."""
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == origin:
            line = frame.lineno
    where = f"line {line}" if line is not None else "an unknown line"
    if isinstance(exc, UndefinedError):
        return f"{where}: undefined variable, attribute or key"
    if isinstance(exc, SecurityError):
        return f"{where}: the sandbox refused an unsafe operation"
    if isinstance(exc, OverflowError | MemoryError | RecursionError):
        return f"{where}: {type(exc).__name__} (a range or value too large)"
    return f"{where}: {type(exc).__name__} while rendering"


def env_quote(value: Any) -> str:
    """`"..."` quoting that both POSIX sh and systemd's EnvironmentFile= read back exactly."""
    return quote_env_value(str(value), what="env_quote")


def shell_quote(value: Any) -> str:
    """POSIX sh single-quoting (`'...'` with `'\\''`). NUL cannot be quoted: an error."""
    text = str(value)
    if "\0" in text:
        raise RenderError("shell_quote: the value contains a NUL byte")
    return shlex.quote(text)


def to_json(value: Any) -> str:
    """JSON text of a value (strings, numbers, lists, mappings); no HTML escaping."""
    try:
        return orjson.dumps(value).decode("utf-8")
    except TypeError:
        raise RenderError("json: the value cannot be written as JSON") from None


def b64encode(value: Any) -> str:
    return base64.b64encode(str(value).encode("utf-8")).decode("ascii")


def b64decode(value: Any) -> str:
    try:
        raw = base64.b64decode(str(value), validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise RenderError("b64decode: not base64 of UTF-8 text") from None
