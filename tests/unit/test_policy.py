"""Access policy: name globs, identities, tcp, default deny (docs/api.md)."""

from __future__ import annotations

import fnmatch
import grp
import pwd
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secretd.access.policy import (
    CompiledRule,
    Policy,
    RuleIndex,
    compile_name_glob,
    compile_unit_glob,
)
from secretd.config.schema import AllowRule
from secretd.errors import ConfigError
from secretd.model import Caller, SecretName, name_problem

ALICE = Caller(uid=1001, gid=1001, pid=42)
BOB = Caller(uid=1002, gid=1002, pid=43)
TCP = Caller(tcp=True)


def rule(secrets: list[str], **who: Any) -> AllowRule:
    return AllowRule(secrets=tuple(secrets), **who)


def names(*raw: str) -> list[SecretName]:
    return [SecretName(r) for r in raw]


def matches(glob: str, name: str) -> bool:
    return compile_name_glob(glob).fullmatch(name) is not None


# --- name globs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "name", "expected"),
    [
        ("db/app", "db/app", True),
        ("db/app", "db/apps", False),
        ("db/app", "xdb/app", False),
        ("db/*", "db/app", True),
        ("db/*", "db/app/x", False),
        ("db/*", "db", False),
        ("db/a*", "db/app", True),
        ("db/*p", "db/app", True),
        ("db/*p", "db/apx", False),
        ("*/app", "db/app", True),
        ("*/app", "a/b/app", False),
        ("db/**", "db/a", True),
        ("db/**", "db/a/b", True),
        ("db/**", "db/a/b/c/d", True),
        ("db/**", "db", False),
        ("db/**", "dbx/a", False),
        ("**/app", "app", True),
        ("**/app", "a/b/app", True),
        ("**/app", "a/b/apps", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/x/y/c", False),
        ("a/**/**/b", "a/b", True),
        ("**", "anything/at/all", True),
        ("**", "x", True),
        ("*", "x", True),
        ("*", "x/y", False),
        ("a.b", "aXb", False),  # '.' is literal, not a regex wildcard
        ("a+b", "aab", False),  # '+' is literal
        ("a=b@c-d_e", "a=b@c-d_e", True),
    ],
)
def test_name_glob(glob: str, name: str, expected: bool) -> None:
    assert matches(glob, name) is expected


@pytest.mark.parametrize(
    "glob",
    [
        "",
        "/db/app",
        "db/app/",
        "db//app",
        "db/../app",
        "./db",
        "db/**x",
        "x**/db",
        "db/?",
        "db/[ab]",
        "db app",
        "db/\x00",
        "db/(a|b)",
        "db/a\\",
        "é",
    ],
)
def test_malformed_glob_is_a_config_error(glob: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_name_glob(glob)
    assert "glob" in str(info.value)


@pytest.mark.parametrize(
    "hostile",
    ["db/../app", "db/%2e%2e/app", "db/app\x00", "db/app\n", "db/app/", "/db/app", "db\\app"],
)
def test_hostile_names_never_match_even_the_broadest_globs(hostile: str) -> None:
    # Names reach the policy validated; this shows the regexes do not rely on it
    # for traversal-looking input, with fullmatch anchoring both ends.
    for glob in ("db/*", "db/app"):
        assert not matches(glob, hostile)


def test_regex_metacharacters_in_names_cannot_widen_a_glob() -> None:
    assert not matches("db/a.c", "db/abc")
    assert matches("db/a.c", "db/a.c")
    assert not matches("a+", "aa")


# --- Hypothesis: the compiled regex agrees with an independent reference -----


def reference_match(glob: str, name: str) -> bool:
    """Segment-wise recursive matcher: `**` takes zero or more segments (one or
    more when it is the last), other segments use fnmatch on one segment."""
    g, n = glob.split("/"), name.split("/")

    def go(i: int, j: int) -> bool:
        if i == len(g):
            return j == len(n)
        if g[i] == "**":
            least = 1 if i == len(g) - 1 else 0
            return any(go(i + 1, k) for k in range(j + least, len(n) + 1))
        return j < len(n) and fnmatch.fnmatchcase(n[j], g[i]) and go(i + 1, j + 1)

    return go(0, 0)


_segment_chars = st.sampled_from([*"ab.-_=@+", "ab", "x"])
_segment = (
    st.lists(_segment_chars, min_size=1, max_size=3)
    .map("".join)
    .filter(lambda s: s not in (".", ".."))
)
_name = st.lists(_segment, min_size=1, max_size=5).map("/".join)
_glob_segment = st.one_of(
    _segment,
    st.just("*"),
    st.just("**"),
    st.tuples(_segment, _segment).map(lambda t: f"{t[0]}*{t[1]}"),
    _segment.map(lambda s: f"*{s}"),
    _segment.map(lambda s: f"{s}*"),
)
_glob = st.lists(_glob_segment, min_size=1, max_size=5).map("/".join)


@settings(max_examples=400, deadline=None)
@given(glob=_glob, name=_name)
def test_glob_matches_reference(glob: str, name: str) -> None:
    assert name_problem(name) is None
    assert matches(glob, name) == reference_match(glob, name)


@settings(max_examples=200, deadline=None)
@given(name=_name)
def test_a_name_matches_itself_and_double_star(name: str) -> None:
    assert matches(name, name)
    assert matches("**", name)


# --- identities -------------------------------------------------------------


def test_default_deny_with_no_rules() -> None:
    policy = Policy([])
    assert not policy.allows(ALICE, SecretName("db/app"))
    assert not policy.allows(TCP, SecretName("db/app"))
    assert not policy.allows(Caller(uid=0, gid=0, pid=1), SecretName("db/app"))


def test_uid_rule() -> None:
    policy = Policy([rule(["db/*"], uids=[1001])])
    assert policy.allows(ALICE, SecretName("db/app"))
    assert not policy.allows(BOB, SecretName("db/app"))
    assert not policy.allows(ALICE, SecretName("api/key"))


def test_root_gets_nothing_by_default() -> None:
    policy = Policy([rule(["**"], uids=[1001])])
    assert not policy.allows(Caller(uid=0, gid=0, pid=1), SecretName("db/app"))


def test_gid_rule_matches_primary_and_supplementary_groups() -> None:
    policy = Policy([rule(["db/*"], gids=[500])])
    assert policy.allows(Caller(uid=7, gid=500, pid=1), SecretName("db/app"))
    assert policy.allows(Caller(uid=7, gid=7, pid=1, extra_gids=frozenset({9, 500})), "db/a")
    assert not policy.allows(Caller(uid=7, gid=7, pid=1, extra_gids=frozenset({9})), "db/a")


def test_users_and_groups_resolve_to_ids_at_construction() -> None:
    daemon = pwd.getpwnam("daemon")
    root_group = grp.getgrnam("root")
    policy = Policy([rule(["a/*"], users=["daemon"]), rule(["b/*"], groups=["root"])])
    assert policy.allows(Caller(uid=daemon.pw_uid, gid=999, pid=1), SecretName("a/x"))
    assert not policy.allows(Caller(uid=daemon.pw_uid, gid=999, pid=1), SecretName("b/x"))
    assert policy.allows(Caller(uid=5, gid=root_group.gr_gid, pid=1), SecretName("b/x"))


@pytest.mark.parametrize(
    ("field", "value"), [("users", "no-such-user-xyz"), ("groups", "no-such-group-xyz")]
)
def test_unknown_user_or_group_is_a_config_error_naming_it(field: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        Policy([rule(["a"], **{field: [value]})])
    assert value in str(info.value)


def test_unit_rule_with_globs() -> None:
    policy = Policy([rule(["db/*"], units=["app.service", "worker-*.service"])])
    assert policy.allows(Caller(uid=9, gid=9, pid=1, unit="app.service"), "db/x")
    assert policy.allows(Caller(uid=9, gid=9, pid=1, unit="worker-3.service"), "db/x")
    assert not policy.allows(Caller(uid=9, gid=9, pid=1, unit="app2.service"), "db/x")
    assert not policy.allows(Caller(uid=9, gid=9, pid=1, unit=None), "db/x")


def test_a_user_manager_unit_never_passes_for_a_system_unit() -> None:
    policy = Policy([rule(["db/*"], units=["*.service"])])
    user_unit = Caller(uid=1000, gid=1000, pid=1, unit="user@1000.service/app.service")
    assert not policy.allows(user_unit, SecretName("db/x"))
    explicit = Policy([rule(["db/*"], units=["user@1000.service/app.service"])])
    assert explicit.allows(user_unit, SecretName("db/x"))
    wildcard_user = Policy([rule(["db/*"], units=["user@*.service/app.service"])])
    assert wildcard_user.allows(user_unit, SecretName("db/x"))


@pytest.mark.parametrize("glob", ["", "a.service/", "/a.service", "a//b"])
def test_malformed_unit_glob_is_a_config_error(glob: str) -> None:
    with pytest.raises(ConfigError):
        compile_unit_glob(glob)


def test_tcp_callers_match_only_tcp_rules() -> None:
    policy = Policy([rule(["db/*"], uids=[1001]), rule(["api/*"], tcp=True)])
    assert not policy.allows(TCP, SecretName("db/x"))
    assert policy.allows(TCP, SecretName("api/x"))
    # A rule that is only tcp does not let a Unix caller in.
    assert not policy.allows(ALICE, SecretName("api/x"))


def test_a_tcp_rule_with_uids_serves_both_kinds() -> None:
    policy = Policy([rule(["db/*"], uids=[1001], tcp=True)])
    assert policy.allows(TCP, SecretName("db/x"))
    assert policy.allows(ALICE, SecretName("db/x"))
    assert not policy.allows(BOB, SecretName("db/x"))


def test_tcp_caller_is_not_matched_by_uid_none_or_unit() -> None:
    policy = Policy([rule(["db/*"], units=["*"], gids=[0], uids=[0])])
    assert not policy.allows(TCP, SecretName("db/x"))


def test_rules_only_allow_and_combine_with_or() -> None:
    policy = Policy([rule(["db/*"], uids=[1001]), rule(["api/*"], uids=[1002])])
    assert policy.allows(ALICE, SecretName("db/x"))
    assert not policy.allows(ALICE, SecretName("api/x"))
    assert policy.allows(BOB, SecretName("api/x"))


def test_several_globs_in_one_rule() -> None:
    policy = Policy([rule(["db/*", "api/stripe"], uids=[1001])])
    assert policy.allows(ALICE, SecretName("api/stripe"))
    assert not policy.allows(ALICE, SecretName("api/other"))


def test_readable_filter_agrees_with_allows() -> None:
    policy = Policy([rule(["db/*"], uids=[1001]), rule(["x/**"], gids=[7], tcp=True)])
    candidates = names("db/a", "db/a/b", "x/1", "x/1/2", "y")
    for caller in (ALICE, BOB, TCP, Caller(uid=3, gid=7, pid=1)):
        readable = policy.readable_filter(caller)
        assert [readable(n) for n in candidates] == [policy.allows(caller, n) for n in candidates]


# --- the rule index answers exactly what a scan of every rule would ------------

_ids = st.frozensets(st.integers(0, 5), max_size=3)
_unit_names = st.sampled_from(
    ["a.service", "b.service", "a.scope", "user@1.service/a.service", "user@2.service/b.service"]
)
_unit_globs = st.sampled_from(
    ["a.service", "*.service", "?.service", "[ab].service", "user@*.service/a.service", "*"]
)
_rules = st.lists(
    st.tuples(_ids, _ids, st.lists(_unit_globs, max_size=2), st.booleans())
    .filter(lambda t: bool(t[0] or t[1] or t[2] or t[3]))
    .map(
        lambda t: AllowRule(
            secrets=("**",), uids=tuple(t[0]), gids=tuple(t[1]), units=tuple(t[2]), tcp=t[3]
        )
    ),
    max_size=8,
)
_callers = st.one_of(
    st.just(Caller(tcp=True)),
    st.builds(
        lambda uid, gid, extra, unit: Caller(uid=uid, gid=gid, pid=1, unit=unit, extra_gids=extra),
        st.integers(0, 5),
        st.integers(0, 5),
        _ids,
        st.one_of(st.none(), _unit_names),
    ),
)


@settings(max_examples=200, deadline=None)
@given(rules=_rules, callers=st.lists(_callers, min_size=1, max_size=4))
def test_rule_index_equals_a_scan_of_every_rule(
    rules: list[AllowRule], callers: list[Caller]
) -> None:
    compiled = [CompiledRule.from_config(rule) for rule in rules]
    index = RuleIndex(compiled)
    policy = Policy(rules)
    for caller in callers:
        scanned = tuple(rule for rule in compiled if rule.admits(caller))
        assert index.admitting(caller) == scanned
        assert policy.allows(caller, SecretName("x/y")) == bool(scanned)


@pytest.mark.parametrize(("field", "value"), [("uids", -1), ("gids", 2**32 - 1), ("uids", 2**40)])
def test_out_of_range_ids_are_config_errors(field: str, value: int) -> None:
    with pytest.raises(ConfigError) as info:
        Policy([rule(["a"], **{field: [value]})])
    assert str(value) in str(info.value)


def test_large_valid_ids_match() -> None:
    policy = Policy([rule(["a"], uids=[3_000_000_000])])
    assert policy.allows(Caller(uid=3_000_000_000, gid=1, pid=1), SecretName("a"))


ASKED = ["db/app", "db/x/y", "app/web", "app/web/deep", "other", "db", "app"]
RULES = [rule(["db/**"], uids=[1001]), rule(["app/*"], uids=[1002], tcp=True)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([ALICE, BOB, TCP]), st.sampled_from(ASKED)),
        min_size=1,
        max_size=40,
    )
)
def test_remembered_decisions_are_the_rules_decisions(asks: list[tuple[Caller, str]]) -> None:
    remembered = Policy(RULES)
    for caller, name in asks:
        # A new Policy remembers nothing: its answer is the rules' own.
        assert remembered.allows(caller, SecretName(name)) is Policy(RULES).allows(
            caller, SecretName(name)
        )


def test_remembered_decisions_are_bounded() -> None:
    from secretd.access import policy as module

    p = Policy([rule(["**"], uids=[1001])])
    for i in range(module.DECISIONS_CACHE_SIZE + 10):
        assert p.allows(ALICE, SecretName(f"probe/{i}"))
        assert not p.allows(BOB, SecretName(f"probe/{i}"))
    assert len(p._decided) <= module.DECISIONS_CACHE_SIZE
