"""Access decisions: which caller may read which secret (docs/api.md).

Rules only ever allow; no matching rule means deny. A rule allows a read when
the secret name matches one of its `secrets` globs AND the caller matches one
of its identities:

- Unix-socket callers match `uids`, `gids` (primary or supplementary),
  `users`/`groups` (resolved to ids once, at construction), or `units`.
- TCP callers (token holders, no peer credentials) match only rules with
  `tcp = true`. A rule with `tcp = true` and uids/units serves both kinds.

Name globs, compiled to regexes at construction:

- `*` matches any run of characters within one segment (never `/`);
- `**` must be a whole segment and matches zero or more whole segments, so
  `a/**/b` matches `a/b` and `a/x/y/b`, and `**/b` matches `b`. A trailing
  `/**` means "everything below" and needs at least one segment: `db/**`
  matches `db/a` and `db/a/b` but not `db` itself (as in gitignore).
- every other character is literal. A glob that could never match a valid
  name (a character names cannot hold, an empty, `.` or `..` segment) is a
  configuration error rather than a silent dead rule.

Unit globs use fnmatch semantics (`*`, `?`, `[...]`) on unit names, with `*`
never crossing `/`, so `*.service` does not match a user-manager unit such as
`user@1000.service/x.service` (see access/identity.py).
"""

from __future__ import annotations

import fnmatch
import functools
import grp
import pwd
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from secretd.config.schema import AllowRule
from secretd.errors import ConfigError
from secretd.model import Caller, SecretName, name_problem

# Callers (one per connection) whose admitting rules are remembered.
ADMITTED_CACHE_SIZE = 4096
# (caller, name) decisions remembered; names are at most 512 characters, so
# this holds a few MiB at worst.
DECISIONS_CACHE_SIZE = 8192
_MAX_ID = 0xFFFFFFFE  # (uid_t)-1 means "no id"
_GLOB_CHARS = re.compile(r"[A-Za-z0-9/_+=.@\-*]+")
# Wildcards expand to name characters only, never '/', NUL or newline: the
# regexes stay right even if an unvalidated string ever reached them.
_SEGMENT_CHAR = r"[A-Za-z0-9_+=.@\-]"
_SEGMENT = _SEGMENT_CHAR + "+"


def compile_name_glob(glob: str) -> re.Pattern[str]:
    """The regex (for `fullmatch`) of one `secrets` glob; ConfigError if malformed."""
    if not glob or _GLOB_CHARS.fullmatch(glob) is None:
        raise ConfigError(
            f"allow rule glob {glob!r}: may only contain name characters "
            "(A-Z a-z 0-9 / _ + = . @ -) and '*'"
        )
    parts = glob.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise ConfigError(
                f"allow rule glob {glob!r}: empty, '.' or '..' segments never match a name"
            )
        if "**" in part and part != "**":
            raise ConfigError(f"allow rule glob {glob!r}: '**' must be a whole segment")
    parts = _collapse_double_stars(parts)
    return re.compile("".join(_segment_regexes(parts)))


def _collapse_double_stars(parts: list[str]) -> list[str]:
    collapsed: list[str] = []
    for part in parts:
        if part == "**" and collapsed and collapsed[-1] == "**":
            continue
        collapsed.append(part)
    return collapsed


def _segment_regexes(parts: list[str]) -> list[str]:
    pieces: list[str] = []
    last = len(parts) - 1
    for index, part in enumerate(parts):
        if part == "**":
            if index == 0 and last == 0:
                pieces.append(f"{_SEGMENT}(?:/{_SEGMENT})*")
            elif index == 0:
                pieces.append(f"(?:{_SEGMENT}/)*")
            elif index == last:
                pieces.append(f"(?:/{_SEGMENT})+")
            else:
                pieces.append(f"(?:/{_SEGMENT})*")
            continue
        leading_star = index == 1 and parts[0] == "**"
        separator = "" if index == 0 or leading_star else "/"
        literal = f"{_SEGMENT_CHAR}*".join(re.escape(chunk) for chunk in part.split("*"))
        pieces.append(separator + literal)
    return pieces


def compile_unit_glob(glob: str) -> tuple[re.Pattern[str], ...]:
    """Per-`/`-part fnmatch regexes of one `units` glob."""
    if not glob or any(not part for part in glob.split("/")):
        raise ConfigError(f"allow rule unit glob {glob!r}: empty unit name or '/' part")
    return tuple(re.compile(fnmatch.translate(part)) for part in glob.split("/"))


def _unit_matches(glob: tuple[re.Pattern[str], ...], unit: str) -> bool:
    return _parts_match(glob, unit.split("/"))


def _parts_match(glob: tuple[re.Pattern[str], ...], parts: list[str]) -> bool:
    if len(parts) != len(glob):
        return False
    return all(p.match(part) is not None for p, part in zip(glob, parts, strict=True))


def _checked_ids(kind: str, ids: Sequence[int]) -> frozenset[int]:
    for value in ids:
        if not 0 <= value <= _MAX_ID:
            raise ConfigError(f"allow rule: {kind} {value} is not a valid id (0-{_MAX_ID})")
    return frozenset(ids)


def _resolve_user(name: str) -> int:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise ConfigError(f"allow rule: unknown user {name!r}") from None


def _resolve_group(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(f"allow rule: unknown group {name!r}") from None


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One `[[allow]]` rule with names resolved and globs compiled."""

    names: re.Pattern[str]
    uids: frozenset[int]
    gids: frozenset[int]
    units: tuple[tuple[re.Pattern[str], ...], ...]
    tcp: bool

    @classmethod
    def from_config(cls, rule: AllowRule) -> CompiledRule:
        names = "|".join(f"(?:{compile_name_glob(g).pattern})" for g in rule.secrets)
        return cls(
            names=re.compile(names),
            uids=_checked_ids("uid", rule.uids) | {_resolve_user(u) for u in rule.users},
            gids=_checked_ids("gid", rule.gids) | {_resolve_group(g) for g in rule.groups},
            units=tuple(compile_unit_glob(u) for u in rule.units),
            tcp=rule.tcp,
        )

    def admits(self, caller: Caller) -> bool:
        """Whether the caller is one of this rule's identities."""
        if caller.tcp:
            return self.tcp
        if caller.uid is not None and caller.uid in self.uids:
            return True
        if caller.gid is not None and caller.gid in self.gids:
            return True
        if not self.gids.isdisjoint(caller.extra_gids):
            return True
        unit = caller.unit
        return unit is not None and any(_unit_matches(u, unit) for u in self.units)

    def covers(self, name: str) -> bool:
        return self.names.fullmatch(name) is not None


def _valid(name: str) -> bool:
    # SecretName validated itself on construction; plain strings are checked here.
    return type(name) is SecretName or name_problem(name) is None


class RuleIndex:
    """Which rules admit a caller, found by id lookups instead of a scan.

    Equivalent to ``[r for r in rules if r.admits(caller)]`` (a test holds it
    to that), in rule order. Unit globs are matched once per distinct unit.
    """

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self._rules = tuple(rules)
        self._by_uid: dict[int, set[int]] = {}
        self._by_gid: dict[int, set[int]] = {}
        for index, rule in enumerate(self._rules):
            for uid in rule.uids:
                self._by_uid.setdefault(uid, set()).add(index)
            for gid in rule.gids:
                self._by_gid.setdefault(gid, set()).add(index)
        self._tcp = tuple(rule for rule in self._rules if rule.tcp)
        self._with_units = [(i, rule) for i, rule in enumerate(self._rules) if rule.units]
        self._for_unit = functools.lru_cache(maxsize=ADMITTED_CACHE_SIZE)(self._unit_rules)

    def _unit_rules(self, unit: str) -> frozenset[int]:
        parts = unit.split("/")
        return frozenset(
            index
            for index, rule in self._with_units
            if any(_parts_match(glob, parts) for glob in rule.units)
        )

    def admitting(self, caller: Caller) -> tuple[CompiledRule, ...]:
        if caller.tcp:
            return self._tcp
        found: set[int] = set()
        if caller.uid is not None:
            found.update(self._by_uid.get(caller.uid, ()))
        for gid in {caller.gid, *caller.extra_gids}:
            if gid is not None:
                found.update(self._by_gid.get(gid, ()))
        if caller.unit is not None:
            found.update(self._for_unit(caller.unit))
        return tuple(self._rules[index] for index in sorted(found))


class Policy:
    """Default-deny access rules, compiled once; decisions are pure and fast.

    Which rules admit a caller is found through an index and remembered per
    `Caller` (a connection's identity does not change), so a new decision
    costs one glob match per rule that admits the caller, however many rules
    there are; and each decision is remembered per (caller, name), so a
    caller reading the same secrets again costs one lookup. A reload builds
    a new Policy, so nothing remembered outlives the rules it came from.
    """

    def __init__(self, rules: Sequence[AllowRule]) -> None:
        self._rules = tuple(CompiledRule.from_config(rule) for rule in rules)
        index = RuleIndex(self._rules)
        self._admitting = functools.lru_cache(maxsize=ADMITTED_CACHE_SIZE)(index.admitting)
        self._decided: dict[tuple[Caller, str], bool] = {}

    def allows(self, caller: Caller, name: SecretName) -> bool:
        """Whether some rule lets `caller` read `name`."""
        key = (caller, name)
        decided = self._decided.get(key)
        if decided is None:
            decided = _valid(name) and any(rule.covers(name) for rule in self._admitting(caller))
            if len(self._decided) >= DECISIONS_CACHE_SIZE:
                self._decided.clear()  # bounded: a caller probing names cannot grow it
            self._decided[key] = decided
        return decided

    def readable_filter(self, caller: Caller) -> Callable[[SecretName], bool]:
        """A fast predicate for listing: the caller's rules are picked once."""
        mine = self._admitting(caller)

        def readable(name: SecretName) -> bool:
            return _valid(name) and any(rule.covers(name) for rule in mine)

        return readable
