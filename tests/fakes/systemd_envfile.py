"""A reference reader for systemd's `EnvironmentFile=` format, written from the
documented rules and systemd's parser (src/basic/env-file.c, v252+) so tests can
check that our env files read back exactly. (`systemd-run` cannot be used in
the test sandbox: systemd is not PID 1 there.)

The rules, per byte:
- before a key: whitespace is skipped; `#` or `;` starts a comment line;
- a key runs to `=` (trailing whitespace dropped); a newline before `=` drops it;
- before a value: whitespace skipped; `'` opens a single-quoted run (no escapes
  at all), `"` a double-quoted run, `\\` escapes the next byte;
- unquoted: `\\x` -> x, backslash-newline is dropped, trailing whitespace is
  chopped, a newline ends the assignment;
- double-quoted: `\\` followed by one of `" \\ ` $` yields that byte,
  backslash-newline is dropped, any other `\\x` keeps both bytes; everything
  else, newlines included, is literal;
- after a closing quote the parser is back before a value, so `"a"'b'"c"` is
  `abc`; but once an unquoted byte was taken, quotes are plain: `"a"b'c'` is `ab'c'`.
Then, as when systemd applies the file to a unit: an assignment whose key is
not `[A-Za-z_][A-Za-z0-9_]*` or whose key/value is not valid UTF-8 (systemd's
notion: no surrogates, no U+FDD0..U+FDEF, no U+xxFFFE/U+xxFFFF) is dropped.
"""

from __future__ import annotations

import re

_WHITESPACE = " \t\n\r"
_NEWLINE = "\n\r"
_COMMENTS = "#;"
_SHELL_NEED_ESCAPE = '"\\`$'
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_environment_file(data: bytes) -> dict[str, str]:
    """The variables a unit gets from a file holding `data` (later keys win)."""
    result: dict[str, str] = {}
    data = data.split(b"\0", 1)[0]  # systemd reads the file as a C string
    for key, value in _assignments(data.decode("latin-1")):
        k, v = key.encode("latin-1"), value.encode("latin-1")
        try:
            key_text, value_text = k.decode("utf-8"), v.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if not _systemd_utf8_ok(key_text + value_text) or not _ENV_NAME.fullmatch(key_text):
            continue
        result[key_text] = value_text
    return result


def _systemd_utf8_ok(text: str) -> bool:
    for char in text:
        point = ord(char)
        if 0xFDD0 <= point <= 0xFDEF or point & 0xFFFE == 0xFFFE:
            return False
    return True


def _assignments(text: str) -> list[tuple[str, str]]:
    parser = _Parser()
    for char in text:
        parser.feed(char)
    parser.finish()
    return parser.out


class _Parser:
    """The byte state machine; each `feed` handles one character (latin-1 = one byte)."""

    def __init__(self) -> None:
        self.state = "pre_key"
        self.key: list[str] = []
        self.value: list[str] = []
        self.key_ws: int | None = None  # where trailing whitespace of the key starts
        self.value_ws: int | None = None
        self.out: list[tuple[str, str]] = []

    def push(self, *, chop_value: bool) -> None:
        key = "".join(self.key[: self.key_ws] if self.key_ws is not None else self.key)
        value = self.value
        if chop_value and self.value_ws is not None:
            value = value[: self.value_ws]
        self.out.append((key, "".join(value)))
        self.key, self.value, self.key_ws, self.value_ws = [], [], None, None

    def feed(self, c: str) -> None:
        getattr(self, "_" + self.state)(c)

    def _pre_key(self, c: str) -> None:
        if c in _COMMENTS:
            self.state = "comment"
        elif c not in _WHITESPACE:
            self.state, self.key_ws = "key", None
            self.key.append(c)

    def _key(self, c: str) -> None:
        if c in _NEWLINE:
            self.state, self.key = "pre_key", []
        elif c == "=":
            self.state, self.value_ws = "pre_value", None
        else:
            if c not in _WHITESPACE:
                self.key_ws = None
            elif self.key_ws is None:
                self.key_ws = len(self.key)
            self.key.append(c)

    def _pre_value(self, c: str) -> None:
        if c in _NEWLINE:
            self.state = "pre_key"
            self.push(chop_value=False)
        elif c == "'":
            self.state = "single"
        elif c == '"':
            self.state = "double"
        elif c == "\\":
            self.state = "value_escape"
        elif c not in _WHITESPACE:
            self.state = "value"
            self.value.append(c)

    def _value(self, c: str) -> None:
        if c in _NEWLINE:
            self.state = "pre_key"
            self.push(chop_value=True)
        elif c == "\\":
            self.state, self.value_ws = "value_escape", None
        else:
            if c not in _WHITESPACE:
                self.value_ws = None
            elif self.value_ws is None:
                self.value_ws = len(self.value)
            self.value.append(c)

    def _value_escape(self, c: str) -> None:
        self.state = "value"
        if c not in _NEWLINE:
            self.value.append(c)

    def _single(self, c: str) -> None:
        if c == "'":
            self.state = "pre_value"
        else:
            self.value.append(c)

    def _double(self, c: str) -> None:
        if c == '"':
            self.state = "pre_value"
        elif c == "\\":
            self.state = "double_escape"
        else:
            self.value.append(c)

    def _double_escape(self, c: str) -> None:
        self.state = "double"
        if c in _SHELL_NEED_ESCAPE:
            self.value.append(c)
        elif c != "\n":
            self.value.extend(("\\", c))

    def _comment(self, c: str) -> None:
        if c == "\\":
            self.state = "comment_escape"
        elif c in _NEWLINE:
            self.state = "pre_key"

    def _comment_escape(self, c: str) -> None:
        self.state = "pre_key" if c in _NEWLINE else "comment"

    def finish(self) -> None:
        if self.state in ("pre_value", "value", "value_escape", "single", "double"):
            self.push(chop_value=self.state == "value")
        elif self.state == "double_escape":
            self.push(chop_value=False)
