"""config.locate: key paths of a TOML text to the line and column they are written at."""

from __future__ import annotations

import tomllib

import pytest

from secretd.config.locate import Spot, find, locate

TEXT = '''\
# a comment with "quotes" and [brackets]
title = """
[not.a.table]
key = "inside a string"
"""
[agent]
"log_level" = 'info'   # trailing [comment]
socket.mode = 1

[backends."a.b"]
type = "file"
auth = { method = "token", 'token file' = "x", nested = { k = [1, {z = 2}] } }
when = 1979-05-27 07:32:00Z

[[template]]
destination = "one"
vars = { A = "x#y" }

[[template]]
destination = "two"

[template.wait]
min = "1s"
list = [
  "a", # comment
  "b",
]
'''


def spots() -> dict[tuple[str | int, ...], tuple[int, int, int, int]]:
    assert tomllib.loads(TEXT)  # the fixture is valid TOML
    return {
        path: (w.key.line, w.key.column, w.value.line, w.value.column)
        for path, w in locate(TEXT).items()
    }


@pytest.mark.parametrize(
    ("path", "where"),
    [
        (("title",), (2, 1, 2, 9)),
        (("agent", "log_level"), (7, 1, 7, 15)),
        (("agent", "socket", "mode"), (8, 8, 8, 15)),
        (("backends", "a.b", "type"), (11, 1, 11, 8)),
        (("backends", "a.b", "auth", "token file"), (12, 28, 12, 43)),
        (("backends", "a.b", "auth", "nested", "k", 1, "z"), (12, 68, 12, 72)),
        (("backends", "a.b", "when"), (13, 1, 13, 8)),
        (("template", 0, "vars", "A"), (17, 10, 17, 14)),
        (("template", 1, "destination"), (20, 1, 20, 15)),
        (("template", 1, "wait", "min"), (23, 1, 23, 7)),
        (("template", 1, "wait", "list", 1), (26, 3, 26, 3)),
    ],
)
def test_keys_are_found_where_they_are_written(
    path: tuple[str | int, ...], where: tuple[int, int, int, int]
) -> None:
    assert spots()[path] == where


def test_text_inside_strings_and_comments_is_not_a_key() -> None:
    found = spots()
    assert ("not",) not in found and ("key",) not in found and ("brackets",) not in found


def test_an_unknown_path_falls_back_to_the_nearest_key_then_to_nothing() -> None:
    found = locate(TEXT)
    assert find(found, ("template", 1, "wait", "max"), key=True) == Spot(22, 1)
    assert find(found, ("nowhere", "at", "all")) is None


@pytest.mark.parametrize("text", ["[a\nb = 1", 'a = "unterminated\n', "= 1", "a = [1,", ""])
def test_text_it_cannot_follow_gives_what_was_found_so_far(text: str) -> None:
    assert isinstance(locate(text), dict)
