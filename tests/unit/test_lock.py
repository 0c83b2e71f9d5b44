"""The installed third-party packages are exactly the ones constraints.txt pins:
`make dev` (and so CI) and the Debian build install with `-c constraints.txt`."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
OURS = {"secretd", "secretd-client", "secretd-workspace", "pip", "setuptools", "wheel"}


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            found[canonicalize_name(name)] = version
    return found


def test_every_installed_package_is_pinned_at_its_installed_version() -> None:
    pinned = pins()
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    ours = {canonicalize_name(n) for n in OURS}
    unpinned = sorted(n for n in installed if n not in pinned and n not in ours)
    assert unpinned == [], "run `make lock` (packaging/lock.sh) and commit constraints.txt"
    drifted = {n: (v, pinned[n]) for n, v in installed.items() if n in pinned and v != pinned[n]}
    assert drifted == {}, "installed versions differ from constraints.txt"


def test_pins_are_exact() -> None:
    assert pins() and all(version for version in pins().values())
