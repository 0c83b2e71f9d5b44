"""Config validation errors as an operator reads them, all of them at once:

    /etc/secretd/secretd.toml:3:1: agent.sockt: unknown key; did you mean `socket`?
    /etc/secretd/secretd.toml:9:8: backends.local.type: expected one of 'file', 'vault', 'aws'

One line per problem: `file:line:column` (from config.locate; the file alone
when the key cannot be found), the key path as written in the file (pydantic's
discriminator tags removed), and what was expected, in our words rather than
pydantic's. Input values are never echoed: a config may hold a pasted secret.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from secretd.config.locate import KeyPath, find, locate

# Wording for pydantic's error types whose message needs no context.
_EXPECTED = {
    "string_type": "expected a string (in quotes)",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "tuple_type": 'expected an array, such as ["a", "b"]',
    "list_type": 'expected an array, such as ["a", "b"]',
    "set_type": 'expected an array, such as ["a", "b"]',
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
    "missing": "required key is missing",
}
_BOUNDS = {
    "greater_than": ("gt", "expected a number greater than {}"),
    "greater_than_equal": ("ge", "expected a number of at least {}"),
    "less_than": ("lt", "expected a number less than {}"),
    "less_than_equal": ("le", "expected a number of at most {}"),
    "too_short": ("min_length", "expected at least {} item(s)"),
    "too_long": ("max_length", "expected at most {} item(s)"),
    "string_too_short": ("min_length", "expected at least {} character(s)"),
    "string_too_long": ("max_length", "expected at most {} characters"),
    "string_pattern_mismatch": ("pattern", "expected text matching {}"),
}


def describe(exc: ValidationError, root: type[BaseModel], *, source: str, text: str) -> list[str]:
    """One line per error of `exc` (validating `root` from `text`, read from `source`)."""
    found = locate(text)
    placed: dict[str, tuple[int, int]] = {}
    for err in exc.errors(include_input=False, include_url=False):
        path, owner, node = walk(root, err["loc"])
        path, message, at_key = _explain(err, path, owner, node)
        spot = find(found, path, key=at_key)
        where = f"{source}:{spot.line}:{spot.column}" if spot else source
        key = dotted(path)
        line = f"{where}: {key}: {message}" if key else f"{where}: {message}"
        placed.setdefault(line, (spot.line, spot.column) if spot else (1 << 30, 0))
    return sorted(placed, key=placed.__getitem__)  # in the file's order


def dotted(path: KeyPath) -> str:
    """('template', 0, 'wait', 'min') -> 'template[0].wait.min'."""
    out = ""
    for item in path:
        if isinstance(item, int):
            out += f"[{item}]"
        else:
            out += f".{item}" if out else item
    return out


def walk(root: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[KeyPath, Any, Any]:
    """pydantic's `loc` as the key path the user wrote (discriminator tags, which
    pydantic inserts, dropped); the model that holds the last key; the type
    expected at the end (None when unknown)."""
    path: list[str | int] = []
    node: Any = root
    owner: Any = None
    for item in loc:
        node = _strip(node)
        members = _models_of(node)
        if members and isinstance(item, str) and _tagged(members, item) is not None:
            node = _tagged(members, item)  # the discriminator's value: not a key
            continue
        path.append(item)
        if isinstance(node, type) and issubclass(node, BaseModel):
            owner = node
            field = node.model_fields.get(item) if isinstance(item, str) else None
            node = field.annotation if field is not None else None
        elif typing.get_origin(node) in (tuple, list, dict):
            node = typing.get_args(node)[-1 if typing.get_origin(node) is dict else 0]
        else:
            node = None
    return tuple(path), owner, _strip(node)


def _explain(
    err: Mapping[str, Any], path: KeyPath, owner: Any, node: Any
) -> tuple[KeyPath, str, bool]:
    """(key path, message, whether the key rather than its value is at fault)."""
    kind: str = err["type"]
    ctx: Mapping[str, Any] = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return path, "unknown key" + _suggestion(path, owner), True
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str(ctx.get("discriminator", "")).strip("'")
        tags = ctx.get("expected_tags") or _tags(node)
        if kind == "union_tag_invalid":
            return (*path, discriminator), f"expected one of {tags}", False
        return (*path, discriminator), f"required key is missing (one of {tags})", True
    if kind == "literal_error":
        return path, f"expected {ctx.get('expected', 'one of the documented values')}", False
    if kind in ("value_error", "assertion_error"):
        return path, str(ctx.get("error", "invalid value")), False
    if kind in _BOUNDS:
        name, wording = _BOUNDS[kind]
        return path, wording.format(ctx.get(name, "?")), False
    if kind in _EXPECTED:
        return path, _EXPECTED[kind], kind == "missing"
    return path, str(err["msg"]).replace("Input should be", "expected"), False


def _suggestion(path: KeyPath, owner: Any) -> str:
    if not path or not isinstance(path[-1], str):
        return ""
    if not (isinstance(owner, type) and issubclass(owner, BaseModel)):
        return ""
    close = difflib.get_close_matches(path[-1], list(owner.model_fields), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def _strip(node: Any) -> Any:
    """Annotated[X, ...] -> X; X | None -> X."""
    while True:
        if typing.get_origin(node) is typing.Annotated:
            node = typing.get_args(node)[0]
            continue
        if typing.get_origin(node) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(node) if a is not type(None)]
            if len(args) == 1:
                node = args[0]
                continue
        return node


def _models_of(node: Any) -> list[type[BaseModel]]:
    """The members of a union of models (a discriminated union), else []."""
    if typing.get_origin(node) not in (typing.Union, types.UnionType):
        return []
    args = [_strip(a) for a in typing.get_args(node)]
    return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]


def _discriminator(members: list[type[BaseModel]]) -> str | None:
    """The key every member of a discriminated union fixes to a literal value."""
    common: set[str] | None = None
    for model in members:
        literal = {n for n, f in model.model_fields.items() if _literals(f.annotation)}
        common = literal if common is None else common & literal
    return min(common) if common else None


def _literals(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return ()


def _tagged(members: list[type[BaseModel]], tag: str) -> type[BaseModel] | None:
    key = _discriminator(members)
    for model in members:
        if key is not None and tag in _literals(model.model_fields[key].annotation):
            return model
    return None


def _tags(node: Any) -> str:
    members = _models_of(node)
    key = _discriminator(members)
    tags = [repr(t) for m in members if key for t in _literals(m.model_fields[key].annotation)]
    return ", ".join(tags) or "the documented values"
