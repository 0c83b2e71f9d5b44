"""Read a TOML config file into a `Config`, with errors naming the file and key path."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from secretd.config.rotation import ROTATOR_TAGS
from secretd.config.schema import Config
from secretd.errors import ConfigError
from secretd.fileperm import read_private_file

MAX_CONFIG_BYTES = 4 * 1024 * 1024


def load_config(path: Path, *, check_perms: bool = True) -> Config:
    """Load and validate `path`. Raises ConfigError naming the file and key path."""
    if check_perms:  # owner and mode checked on the descriptor that is read
        raw = read_private_file(path, what="config file", secret=False, limit=MAX_CONFIG_BYTES)
    else:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    return parse_config(text, source=str(path), base_dir=path.resolve().parent)


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(f"{source}: {describe_errors(exc)}") from None


def describe_errors(exc: ValidationError) -> str:
    """'backends.vault.address: expected an http:// or https:// URL; ...'

    Input values are deliberately not echoed: a config may hold a pasted secret.
    """
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = _key_path(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for index, item in enumerate(loc):
        if index == 2 and loc[0] == "rotation" and item in ROTATOR_TAGS:
            continue  # the discriminator tag again: rotation[0].postgresql.roles
        if isinstance(item, int):
            out += f"[{item}]"
        elif item in ("file", "vault", "aws", "token", "approle") and out.count(".") >= 1:
            # pydantic inserts the discriminator tag into the location; the user never wrote it
            continue
        else:
            out += f".{item}" if out else str(item)
    return out
