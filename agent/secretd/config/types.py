"""Reusable annotated field types: durations, file modes, names, paths, loopback addresses.

The parsers are plain functions; the annotated types wrapping them in pydantic
validators are built on first use (PEP 562), so that a client command that
only parses a duration (`secretd get`, `secretd exec`) does not load pydantic.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from secretd.model import SecretName, name_problem

if TYPE_CHECKING:
    from pydantic import ValidationInfo

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(raw: Any) -> float:
    """'250ms', '30s', '5m', '1h', '30d' (or a sequence like '1m30s') -> seconds."""
    if not isinstance(raw, str):
        raise ValueError("expected a duration string such as '250ms', '30s', '5m', '1h' or '30d'")
    text = raw.strip()
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(
            f"expected a duration such as '250ms', '30s', '5m', '1h' or '30d', got {raw!r}"
        )
    return total


def parse_mode(raw: Any) -> int:
    """'0640' -> 0o640. Only permission bits; a string so TOML octal confusion cannot bite."""
    if not isinstance(raw, str) or re.fullmatch(r"0?[0-7]{3}", raw) is None:
        raise ValueError(f"expected a file mode string such as '0640', got {raw!r}")
    return int(raw, 8)


def check_name(raw: Any) -> SecretName:
    problem = name_problem(raw)
    if problem is not None:
        raise ValueError(problem)
    return SecretName(raw)


def resolve_path(value: Path, info: ValidationInfo) -> Path:
    """Relative paths are taken from the config file's directory."""
    base = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return Path(os.path.normpath(value))


def check_loopback(raw: Any) -> str:
    """'127.0.0.1:2773', '[::1]:2773' or 'localhost:2773'; any other host is refused."""
    if not isinstance(raw, str):
        raise ValueError("expected 'HOST:PORT' with a loopback host, such as '127.0.0.1:2773'")
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected 'HOST:PORT' with a port 1-65535, got {raw!r}")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare == "localhost":
        return raw
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        raise ValueError(f"listen host must be a loopback IP address, got {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"listen host {host!r} is not a loopback address; only 127.0.0.0/8 or ::1")
    return raw


if TYPE_CHECKING:
    from pydantic import AfterValidator, BeforeValidator, PlainValidator

    Duration = Annotated[float, BeforeValidator(parse_duration)]
    Mode = Annotated[int, BeforeValidator(parse_mode)]
    Name = Annotated[SecretName, PlainValidator(check_name)]
    ConfigPath = Annotated[Path, AfterValidator(resolve_path)]
    LoopbackAddress = Annotated[str, BeforeValidator(check_loopback)]
else:
    _ANNOTATED = frozenset({"Duration", "Mode", "Name", "ConfigPath", "LoopbackAddress"})

    def __getattr__(name: str) -> Any:
        if name not in _ANNOTATED:  # also what the import system probes (`__path__`)
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from pydantic import AfterValidator, BeforeValidator, PlainValidator

        built = {
            "Duration": Annotated[float, BeforeValidator(parse_duration)],
            "Mode": Annotated[int, BeforeValidator(parse_mode)],
            "Name": Annotated[SecretName, PlainValidator(check_name)],
            "ConfigPath": Annotated[Path, AfterValidator(resolve_path)],
            "LoopbackAddress": Annotated[str, BeforeValidator(check_loopback)],
        }
        globals().update(built)
        return built[name]
