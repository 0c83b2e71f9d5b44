"""The `env` and `json` output formats, rendered from a template's `vars` table.

An env file must read back byte for byte through two parsers at once: a POSIX
shell's `.` and systemd's `EnvironmentFile=`. Every value is written as

    NAME="..."            with \\ " $ ` escaped by a backslash

because that is the one quoting both agree on:

- sh: inside double quotes a backslash escapes exactly `$ ` " \\` and newline;
  every other byte (newline, tab, CR, `#`, `'`, trailing spaces) is literal.
- systemd (src/basic/env-file.c): inside double quotes a backslash followed by
  one of `" \\ ` $` yields that byte, a backslash-newline is a continuation
  (never produced here: a backslash in a value is always doubled), and every
  other byte, newlines included, is literal.

Single quotes are no good: systemd has no way to write `'` inside them.
What neither can carry is refused: NUL (a C string ends there), bytes that are
not UTF-8 and the code points systemd's UTF-8 check rejects (U+FDD0..U+FDEF
and U+xxFFFE/U+xxFFFF), and names that are not `[A-Za-z_][A-Za-z0-9_]*`. So a
value can never add a variable: it can only ever be the inside of one quoted
string. Errors name the variable and the secret, never a value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import orjson

from secretd.errors import ConfigError, RenderError
from secretd.model import SecretName, SecretValue, name_problem
from secretd.render.errors import TemplateError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPED = str.maketrans({"\\": "\\\\", '"': '\\"', "$": "\\$", "`": "\\`"})


@dataclass(frozen=True, slots=True)
class VarRef:
    """One entry of `vars`: variable `var` takes `secret` (or one `field` of it)."""

    var: str
    secret: SecretName
    field: str | None = None


def parse_vars(table: Mapping[str, str], *, where: str, env: bool) -> tuple[VarRef, ...]:
    """`{"DB_PASSWORD": "db/app#password"}` -> VarRefs. Raises ConfigError naming `where`."""
    refs = []
    for var, target in table.items():
        if env and _ENV_NAME.fullmatch(var) is None:
            raise ConfigError(
                f"{where}: vars.{var}: not a valid environment variable name "
                "(letters, digits and '_', not starting with a digit)"
            )
        name, sep, field = target.partition("#")
        problem = name_problem(name)
        if problem is not None:
            raise ConfigError(f"{where}: vars.{var}: {problem}")
        if sep and not field:
            raise ConfigError(f"{where}: vars.{var}: empty field after '#'")
        refs.append(VarRef(var, SecretName(name), field or None))
    return tuple(refs)


def value_text(value: SecretValue, *, what: str) -> str:
    """The value as text; RenderError naming `what` when it is not UTF-8."""
    text = value.text()
    if text is None:
        raise RenderError(f"{what} is not UTF-8 text and cannot be written to this file")
    return text


def render_env(values: Mapping[str, SecretValue], *, sources: Mapping[str, str]) -> bytes:
    """An env file with one `NAME="value"` line per variable, in the given order.

    `sources` maps each variable to the secret name it came from, used in error
    messages (TemplateError, with that secret kept apart for health).
    """
    lines = []
    for var, value in values.items():
        what = f"variable {var} (secret {sources.get(var, '?')})"
        try:
            if _ENV_NAME.fullmatch(var) is None:
                raise RenderError(f"{what}: not a valid environment variable name")
            lines.append(f"{var}={quote_env_value(value_text(value, what=what), what=what)}\n")
        except RenderError as exc:
            raise _about(exc, sources.get(var)) from None
    return "".join(lines).encode("utf-8")


def _about(exc: RenderError, source: str | None) -> TemplateError:
    secret = SecretName(source) if source is not None and name_problem(source) is None else None
    return TemplateError(str(exc), secret=secret)


def quote_env_value(text: str, *, what: str) -> str:
    """`text` double-quoted for both sh and systemd; RenderError naming `what` if impossible."""
    problem = _env_value_problem(text)
    if problem is not None:
        raise RenderError(f"{what}: {problem}")
    return '"' + text.translate(_ESCAPED) + '"'


def _env_value_problem(text: str) -> str | None:
    if "\0" in text:
        return "contains a NUL byte, which no env file can carry"
    for char in text:
        point = ord(char)
        if 0xFDD0 <= point <= 0xFDEF or point & 0xFFFE == 0xFFFE:
            # Which one is not said: it is part of the value.
            return (
                "contains a noncharacter (U+FDD0-U+FDEF or U+xxFFFE/U+xxFFFF), "
                "which systemd's EnvironmentFile= rejects"
            )
    return None


def render_json(values: Mapping[str, SecretValue], *, sources: Mapping[str, str]) -> bytes:
    """A JSON object of variable -> text value, pretty enough to read, newline-terminated."""
    obj = {}
    for var, value in values.items():
        try:
            obj[var] = value_text(value, what=f"variable {var} (secret {sources.get(var, '?')})")
        except RenderError as exc:
            raise _about(exc, sources.get(var)) from None
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n"
