"""The reference EnvironmentFile= reader (tests/fakes) behaves as systemd documents:
checked on the cases systemd's own rules spell out, so the round-trip tests
built on it mean something."""

from __future__ import annotations

import pytest

from tests.fakes.systemd_envfile import parse_environment_file

CASES = [
    (b"A=plain\n", {"A": "plain"}),
    (b"A=trailing   \n", {"A": "trailing"}),
    (b"  A = spaced\n", {"A": "spaced"}),
    (b"# comment\n; also\nA=1\n", {"A": "1"}),
    (b"A='single $x \\n'\n", {"A": "single $x \\n"}),
    (b'A="dq \\" \\\\ \\$ \\` \\n"\n', {"A": 'dq " \\ $ ` \\n'}),
    (b'A="multi\nline"\n', {"A": "multi\nline"}),
    (b'A="a"\'b\'"c"\n', {"A": "abc"}),  # quoted runs join
    (b"A=\"a\"b'c'\n", {"A": "ab'c'"}),  # once unquoted, quotes are plain bytes
    (b"A=x\\\ny\n", {"A": "xy"}),
    (b'A="x\\\ny"\n', {"A": "xy"}),
    (b"A=un\\ quoted\n", {"A": "un quoted"}),
    (b"A=1\nA=2\n", {"A": "2"}),
    (b"A=last-line-no-newline", {"A": "last-line-no-newline"}),
    (b"NOEQUALS\nB=2\n", {"B": "2"}),
    (b"1BAD=x\nGOOD=y\n", {"GOOD": "y"}),
    (b"A=\xff\nB=ok\n", {"B": "ok"}),
    (b"A=\xef\xbf\xbe\n", {}),  # U+FFFE: systemd's UTF-8 check refuses it
    (b"A=cut\x00B=hidden\n", {"A": "cut"}),
    (b"A=\n", {"A": ""}),
]


@pytest.mark.parametrize("data,expected", CASES)
def test_reference_reader_follows_systemd_rules(data: bytes, expected: dict[str, str]) -> None:
    assert parse_environment_file(data) == expected
