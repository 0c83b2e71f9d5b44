"""Read a TOML config file into a `Config`; every problem at once, each naming
the file, line, column and key path (config.problems)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydantic import ValidationError

from secretd.config.problems import describe
from secretd.config.schema import Config
from secretd.errors import ConfigError
from secretd.fileperm import read_private_file

MAX_CONFIG_BYTES = 4 * 1024 * 1024
_TOML_AT = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


def load_config(path: Path, *, check_perms: bool = True) -> Config:
    """Load and validate `path`. Raises ConfigError, one line per problem.

    Relative paths in the file are taken from the directory the file is named
    in (a symlinked config: the link's directory, as the operator sees it)."""
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
    base_dir = (path if path.is_absolute() else Path.cwd() / path).parent
    return parse_config(text, source=str(path), base_dir=base_dir)


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_error(str(exc), source)) from None
    try:
        return Config.model_validate(data, context={"base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError("\n".join(describe(exc, Config, source=source, text=text))) from None


def _toml_error(message: str, source: str) -> str:
    """tomllib's "Invalid value (at line 3, column 9)" as `file:3:9: invalid TOML: ...`."""
    at = _TOML_AT.search(message)
    if at is None:
        return f"{source}: invalid TOML: {message}"
    reason = message[: at.start()]
    return f"{source}:{at.group(1)}:{at.group(2)}: invalid TOML: {reason[:1].lower()}{reason[1:]}"
