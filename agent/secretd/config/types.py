"""Reusable annotated field types: durations, file modes, names, paths, loopback addresses.

Error messages say what was expected and never echo the value given: a config
may hold a pasted secret.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, PlainValidator, ValidationInfo

from secretd.durations import parse_duration
from secretd.model import SecretName, name_problem

__all__ = [
    "AuditTarget",
    "ConfigPath",
    "Duration",
    "LoopbackAddress",
    "Mode",
    "Name",
    "check_loopback",
    "check_name",
    "parse_duration",
    "parse_mode",
    "resolve_audit_target",
    "resolve_path",
]


def parse_mode(raw: Any) -> int:
    """'0640' -> 0o640. Only permission bits; a string so TOML octal confusion cannot bite."""
    if not isinstance(raw, str) or re.fullmatch(r"0?[0-7]{3}", raw) is None:
        raise ValueError("expected a file mode string such as '0640' (quoted, octal)")
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


def resolve_audit_target(value: str, info: ValidationInfo) -> str:
    """`audit_log`: "-" (stderr) as it is, else a path resolved like every other."""
    if value == "-":
        return value
    if not value:
        raise ValueError('expected a file path, or "-" for stderr')
    return str(resolve_path(Path(value), info))


def check_loopback(raw: Any) -> str:
    """'127.0.0.1:2773', '[::1]:2773' or 'localhost:2773'; any other host is refused."""
    if not isinstance(raw, str):
        raise ValueError("expected 'HOST:PORT' with a loopback host, such as '127.0.0.1:2773'")
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected 'HOST:PORT' with a port 1-65535, such as '127.0.0.1:2773'")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare == "localhost":
        return raw
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        raise ValueError("expected a loopback IP address (127.0.0.1, ::1) or localhost") from None
    if not address.is_loopback:
        raise ValueError("the host is not a loopback address; only 127.0.0.0/8, ::1 or localhost")
    return raw


Duration = Annotated[float, BeforeValidator(parse_duration)]
Mode = Annotated[int, BeforeValidator(parse_mode)]
Name = Annotated[SecretName, PlainValidator(check_name)]
ConfigPath = Annotated[Path, AfterValidator(resolve_path)]
AuditTarget = Annotated[str, AfterValidator(resolve_audit_target)]
LoopbackAddress = Annotated[str, BeforeValidator(check_loopback)]
