"""Pure parts of the Vault-compatible API: version numbers, times, list keys,
parameters, and the `[vault_api]` config table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict

from secretd.api.vault_compat import parse_version
from secretd.api.vault_shapes import created_millis, go_time, list_keys, version_number
from secretd.config import parse_config
from secretd.errors import ConfigError, InvalidRequest
from secretd.model import SecretValue, Version

BACKEND = '[backends.local]\ntype = "file"\npath = "/tmp/store"\n'


def version(vid: str, created: datetime) -> Version:
    return Version(vid, frozenset({"current"}), created, SecretValue(b"x"))


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 3, 2, 12, 0, 0, 456789, tzinfo=UTC), "2026-03-02T12:00:00.456789Z"),
        (datetime(2026, 3, 2, 12, 0, 0, 120000, tzinfo=UTC), "2026-03-02T12:00:00.12Z"),
        (datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC), "2026-03-02T12:00:00Z"),
        (
            datetime(2026, 3, 2, 14, 0, 0, tzinfo=timezone(timedelta(hours=2))),
            "2026-03-02T12:00:00Z",
        ),
    ],
)
def test_times_are_go_rfc3339_in_utc(moment: datetime, text: str) -> None:
    assert go_time(moment) == text


def test_vault_backed_versions_keep_kv_numbers() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    assert version_number(version("7", created), kv_numbered=True) == 7
    # A non-numeric id (never sent by KV) falls back to the creation time.
    assert version_number(version("abc", created), kv_numbered=True) == created_millis(created)
    # Other backends' ids are opaque even when they look like numbers.
    assert version_number(version("7", created), kv_numbered=False) == 1767225600000


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1)),
    st.integers(min_value=1, max_value=10**9),
)
def test_later_versions_get_larger_numbers(first: datetime, later_by_ms: int) -> None:
    older = first.replace(tzinfo=UTC)
    newer = older + timedelta(milliseconds=later_by_ms)
    a = version_number(version("a", older), kv_numbered=False)
    b = version_number(version("b", newer), kv_numbered=False)
    assert 0 < a < b < 2**63


def test_list_keys_are_one_level_with_folders_marked() -> None:
    names = ["app/db", "app/api/key", "app/api/other", "apple", "ops/root"]
    assert list_keys(names, "app/") == ["api/", "db"]
    assert list_keys(names, "") == ["app/", "apple", "ops/"]
    assert list_keys(names, "none/") == []


@pytest.mark.parametrize(
    ("query", "wanted"),
    [({}, None), ({"version": "3"}, 3), ({"version": "0"}, None), ({"version": "-1"}, None)],
)
def test_version_parameter(query: dict[str, str], wanted: int | None) -> None:
    assert parse_version(MultiDict(query)) == wanted


@pytest.mark.parametrize("raw", ["", "x", "1.5", "9223372036854775808"])
def test_bad_version_parameter(raw: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_version(MultiDict({"version": raw}))


def test_vault_api_is_off_unless_configured() -> None:
    assert parse_config(BACKEND).vault_api is None
    assert parse_config("[vault_api]\n" + BACKEND).vault_api.mount == "secret"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("mount", "expected"), [("kv", "kv"), ("kv/", "kv"), ("team/kv", "team/kv")]
)
def test_mount_names(mount: str, expected: str) -> None:
    config = parse_config(f'[vault_api]\nmount = "{mount}"\n' + BACKEND)
    assert config.vault_api is not None and config.vault_api.mount == expected


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        ("secrets", "may not start with auth, health, secrets, sys"),
        ("sys", "may not start with"),
        ("auth/x", "may not start with"),
        ("health", "may not start with"),
        ("", "expected a mount name"),
        ("a//b", "expected a mount name"),
        ("../x", "expected a mount name"),
        ("{x}", "expected a mount name"),
    ],
)
def test_bad_mounts_are_config_errors_naming_the_key(mount: str, message: str) -> None:
    with pytest.raises(ConfigError, match=r"vault_api\.mount") as raised:
        parse_config(f'[vault_api]\nmount = "{mount}"\n' + BACKEND)
    assert message in str(raised.value)


def test_unknown_vault_api_keys_are_errors() -> None:
    with pytest.raises(ConfigError, match=r"vault_api\.mountt: unknown key"):
        parse_config('[vault_api]\nmountt = "x"\n' + BACKEND)
