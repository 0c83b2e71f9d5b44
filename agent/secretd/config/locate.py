"""Where each key of a TOML document is written: key path -> line and column.

`tomllib` gives no positions, so config errors would name only the file. This
is a small scanner over text that `tomllib` has already accepted: it follows
table headers (`[a.b]`), arrays of tables (`[[a]]`, counted, so the third one
is `a[2]`), dotted and quoted keys, inline tables and arrays (their items are
`key[0]`, `key[1]`, ...), and skips strings of all four kinds and comments. It
records, for every key path, where the key is written and where its value
starts.

It never raises: on anything it does not expect it stops and returns what it
found so far, and a caller without a position names the file alone.
"""

from __future__ import annotations

import bisect
import contextlib
import re
import tomllib
from dataclasses import dataclass

KeyPath = tuple[str | int, ...]

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_SPACE = " \t"


@dataclass(frozen=True, slots=True)
class Spot:
    """A 1-based line and column."""

    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Where:
    """Where a key is written and where its value starts."""

    key: Spot
    value: Spot


def locate(text: str) -> dict[KeyPath, Where]:
    """Every key path of `text` with its position (best effort; see the module doc)."""
    scanner = _Scanner(text)
    with contextlib.suppress(_Stop, IndexError, ValueError, tomllib.TOMLDecodeError):
        scanner.document()
    return scanner.found


def find(found: dict[KeyPath, Where], path: KeyPath, *, key: bool = False) -> Spot | None:
    """The position of `path` (its key when `key`, else its value), else of the
    nearest enclosing key that has one, else None."""
    for end in range(len(path), 0, -1):
        where = found.get(path[:end])
        if where is not None:
            return where.key if key or end < len(path) else where.value
    return None


class _Stop(Exception):
    """The text is not what the scanner expects: stop, keep what was found."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.found: dict[KeyPath, Where] = {}
        self._tables: dict[KeyPath, int] = {}  # array-of-tables path -> elements so far
        self._lines = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

    # -- positions --------------------------------------------------------------

    def spot(self, pos: int) -> Spot:
        line = bisect.bisect_right(self._lines, pos)
        return Spot(line, pos - self._lines[line - 1] + 1)

    def record(self, path: KeyPath, key_pos: int, value_pos: int) -> None:
        if path and path not in self.found:
            self.found[path] = Where(self.spot(key_pos), self.spot(value_pos))

    # -- reading ------------------------------------------------------------------

    def peek(self, length: int = 1) -> str:
        return self.text[self.pos : self.pos + length]

    def skip(self, chars: str) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1

    def skip_blank(self) -> None:
        """Whitespace, newlines and comments."""
        while self.pos < len(self.text):
            self.skip(_SPACE + "\r\n")
            if self.peek() != "#":
                return
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end

    def expect(self, token: str) -> None:
        self.skip(_SPACE)
        if not self.text.startswith(token, self.pos):
            raise _Stop
        self.pos += len(token)

    # -- grammar ------------------------------------------------------------------

    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip_blank()
            if self.pos >= len(self.text):
                return
            if self.peek() == "[":
                table = self.header()
            else:
                self.pair(table)

    def header(self) -> KeyPath:
        start = self.pos
        array = self.peek(2) == "[["
        self.pos += 2 if array else 1
        keys = [key for key, _ in self.keys()]
        self.expect("]]" if array else "]")
        if not array:
            path = self.resolve(keys)
            for end in range(1, len(path) + 1):  # `[a.b]` also shows where `a` is
                self.record(path[:end], start, start)
            return path
        parent = self.resolve(keys[:-1])
        listed = (*parent, keys[-1])
        index = self._tables.get(listed, 0)
        self._tables[listed] = index + 1
        self.record(listed, start, start)
        self.record((*listed, index), start, start)
        return (*listed, index)

    def resolve(self, keys: list[str]) -> KeyPath:
        """A header's keys as a path: an array of tables on the way means its last element."""
        path: KeyPath = ()
        for key in keys:
            path = (*path, key)
            count = self._tables.get(path)
            if count:
                path = (*path, count - 1)
        return path

    def pair(self, table: KeyPath) -> None:
        """`key = value` (the key may be dotted: each part is recorded)."""
        *parents, (last, last_at) = self.keys()
        path = table
        for key, at in parents:
            path = (*path, key)
            self.record(path, at, at)
        path = (*path, last)
        self.expect("=")
        self.skip(_SPACE)
        self.record(path, last_at, self.pos)
        self.value(path)

    def keys(self) -> list[tuple[str, int]]:
        """A dotted key: each part with where it starts."""
        parts = []
        while True:
            self.skip(_SPACE)
            at = self.pos
            parts.append((self.simple_key(), at))
            self.skip(_SPACE)
            if self.peek() != ".":
                return parts
            self.pos += 1

    def simple_key(self) -> str:
        if self.peek() in ('"', "'"):
            start = self.pos
            self.string()
            decoded = tomllib.loads(f"k = {self.text[start : self.pos]}")["k"]
            return str(decoded)
        match = _BARE.match(self.text, self.pos)
        if match is None:
            raise _Stop
        self.pos = match.end()
        return match.group()

    def value(self, path: KeyPath) -> None:
        head = self.peek()
        if not head or head in ",]}\n#":
            raise _Stop  # a value is missing: the text is not what tomllib accepted
        if head in ('"', "'"):
            self.string()
        elif head == "{":
            self.inline_table(path)
        elif head == "[":
            self.array(path)
        else:  # numbers, booleans, dates (which may hold a space)
            while self.pos < len(self.text) and self.text[self.pos] not in ",]}\n#":
                self.pos += 1

    def inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while True:
            self.skip_blank()
            if self.peek() == "}":
                self.pos += 1
                return
            self.pair(path)
            self.skip_blank()
            if self.peek() == ",":
                self.pos += 1

    def array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while True:
            self.skip_blank()
            if self.peek() == "]":
                self.pos += 1
                return
            self.record((*path, index), self.pos, self.pos)
            self.value((*path, index))
            index += 1
            self.skip_blank()
            if self.peek() == ",":
                self.pos += 1

    def string(self) -> None:
        """Skip one string of any of TOML's four kinds."""
        quote = self.peek()
        triple = self.peek(3) == quote * 3
        self.pos += 3 if triple else 1
        closing = quote * 3 if triple else quote
        while self.pos < len(self.text):
            if quote == '"' and self.text[self.pos] == "\\":
                self.pos += 2
                continue
            if self.text.startswith(closing, self.pos):
                self.pos += len(closing)
                while triple and self.peek() == quote:  # up to two quotes may close it
                    self.pos += 1
                return
            if not triple and self.text[self.pos] == "\n":
                raise _Stop
            self.pos += 1
        raise _Stop
