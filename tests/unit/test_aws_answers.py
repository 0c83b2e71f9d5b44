"""Pure parts of the AWS backend: stage names, answer checks, error mapping, batching."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore import exceptions as bce
from hypothesis import given, settings
from hypothesis import strategies as st

from secretd.aws_stages import from_aws_labels, to_aws_labels, to_aws_stage
from secretd.backends.aws_answers import Asked, current_version_of, parse_secret_value
from secretd.backends.aws_batcher import CurrentBatcher
from secretd.backends.aws_errors import is_throttle, map_error
from secretd.errors import (
    SOURCE_ERRORS,
    BackendAuthError,
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    BadBackendAnswer,
    NotFound,
    SourceError,
)
from secretd.model import Fetched, SecretName, SecretValue, Version

CANARY = "canary-unit-93ab"
WHEN = datetime(2026, 1, 1, tzinfo=UTC)


def answer(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ARN": "arn:aws:secretsmanager:us-east-1:1:secret:db-abcdef",
        "Name": "db",
        "VersionId": "v1",
        "SecretString": CANARY,
        "VersionStages": ["AWSCURRENT"],
        "CreatedDate": WHEN,
    }
    base.update(changes)
    return base


def parse(raw: object, asked: Asked | None = None, limit: int = 1024) -> Fetched:
    fetched, _ = parse_secret_value(
        raw, asked or Asked(SecretName("db")), backend="aws", max_secret_bytes=limit
    )
    return fetched


# -- stages -------------------------------------------------------------------


def test_stage_names_map_both_ways() -> None:
    assert [to_aws_stage(s) for s in ("current", "previous", "pending", "blue")] == [
        "AWSCURRENT",
        "AWSPREVIOUS",
        "AWSPENDING",
        "blue",
    ]
    assert from_aws_labels(["AWSCURRENT", "AWSPENDING", "blue"]) == {"current", "pending", "blue"}
    assert to_aws_labels({"previous", "zeta", "current", "alpha"}) == [
        "AWSCURRENT",
        "AWSPREVIOUS",
        "alpha",
        "zeta",
    ]


def test_custom_labels_spelled_like_ours_are_dropped() -> None:
    # An AWS label "current" on a non-current version must not make it current.
    assert from_aws_labels(["AWSPREVIOUS", "current", "pending"]) == {"previous"}


# -- answers ------------------------------------------------------------------


def test_a_good_answer_becomes_a_version() -> None:
    fetched = parse(answer(CreatedDate=datetime(2026, 1, 1, 1, tzinfo=None)))
    assert fetched.version == Version(
        "v1",
        frozenset({"current"}),
        datetime(2026, 1, 1, 1, tzinfo=UTC),
        SecretValue(CANARY.encode()),
    )
    binary = parse(answer(SecretString=None, SecretBinary=b"\x00\xff"))
    assert binary.version.value.reveal() == b"\x00\xff"


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        "text",
        answer(Name="other"),
        answer(Name=None),
        answer(VersionId=None),
        answer(VersionId=""),
        answer(VersionId="x" * 300),
        answer(VersionId="bad\nid"),
        answer(VersionStages=["AWSPREVIOUS"]),
        answer(VersionStages="AWSCURRENT"),
        answer(VersionStages=[1]),
        answer(VersionStages=["x"] * 100),
        answer(SecretString=None),
        answer(SecretString=5),
        answer(SecretBinary=b"x"),
        answer(SecretString="\ud800"),
        answer(SecretString="x" * 2000),
        answer(CreatedDate=None),
        answer(CreatedDate="2026-01-01"),
        answer(CreatedDate=True),
        answer(CreatedDate=1e300),
    ],
)
def test_hostile_answers_are_bad_backend_answers(raw: object) -> None:
    with pytest.raises(BadBackendAnswer) as caught:
        parse(raw)
    assert CANARY not in str(caught.value)
    assert "'db'" in str(caught.value)


def test_the_requested_version_and_stage_must_match() -> None:
    with pytest.raises(BadBackendAnswer, match="another version"):
        parse(answer(), Asked(SecretName("db"), version_id="v2"))
    with pytest.raises(BadBackendAnswer, match="AWSPENDING"):
        parse(answer(), Asked(SecretName("db"), stage="pending"))
    assert parse(answer(VersionStages=[]), Asked(SecretName("db"), version_id="v1"))


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "Name",
                "VersionId",
                "SecretString",
                "SecretBinary",
                "VersionStages",
                "CreatedDate",
                "ARN",
                "Other",
            ]
        ),
        st.one_of(
            st.none(),
            st.text(max_size=20),
            st.binary(max_size=20),
            st.integers(),
            st.lists(st.text(max_size=5), max_size=3),
            st.datetimes(),
        ),
    )
)
def test_any_answer_either_parses_or_is_refused(raw: dict[str, Any]) -> None:
    try:
        fetched = parse(raw)
    except BadBackendAnswer:
        return
    # Whatever got through was for the right secret, current, with a value.
    assert raw["Name"] == fetched.name == "db"
    assert "AWSCURRENT" in raw["VersionStages"] and "current" in fetched.version.stages
    assert fetched.version.version_id == raw["VersionId"]


def test_listing_entries() -> None:
    entry = {
        "Name": "db",
        "ARN": "arn:x",
        "SecretVersionsToStages": {"v1": ["AWSPREVIOUS"], "v2": ["AWSCURRENT"]},
    }
    assert current_version_of(entry, backend="aws") == ("db", "v2", "arn:x")
    assert current_version_of({**entry, "DeletedDate": WHEN}, backend="aws") is None
    assert current_version_of({**entry, "Name": "bad name!"}, backend="aws") is None
    assert current_version_of({"Name": "db", "SecretVersionsToStages": {}}, backend="aws") is None
    described = {"Name": "db", "VersionIdsToStages": {"v9": ["AWSCURRENT"]}}
    assert current_version_of(described, backend="aws") == ("db", "v9", None)
    with pytest.raises(BadBackendAnswer):
        current_version_of("nope", backend="aws")
    with pytest.raises(BadBackendAnswer):
        current_version_of(
            {"Name": "db", "SecretVersionsToStages": {"": ["AWSCURRENT"]}}, backend="aws"
        )


# -- errors -------------------------------------------------------------------


def client_error(code: str, status: int = 400, message: str = "") -> bce.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return bce.ClientError(response, "GetSecretValue")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (client_error("ResourceNotFoundException"), NotFound),
        (
            client_error(
                "InvalidRequestException", message="...because it was marked for deletion."
            ),
            NotFound,
        ),
        (
            client_error("InvalidRequestException", message="You can't do that now"),
            BackendUnavailable,
        ),
        (client_error("AccessDeniedException"), BackendAuthError),
        (client_error("UnrecognizedClientException"), BackendAuthError),
        (client_error("ExpiredTokenException"), BackendAuthError),
        (client_error("ThrottlingException"), BackendUnavailable),
        (client_error("Whatever", status=429), BackendUnavailable),
        (client_error("InternalServiceError", status=500), BackendUnavailable),
        (client_error("DecryptionFailure"), BackendUnavailable),
        (bce.NoCredentialsError(), BackendAuthError),
        (bce.ReadTimeoutError(endpoint_url="http://x"), BackendTimeout),
        (bce.ConnectTimeoutError(endpoint_url="http://x"), BackendTimeout),
        (bce.EndpointConnectionError(endpoint_url="http://x"), BackendUnavailable),
        (bce.ParamValidationError(report="bad"), NotFound),
        (TimeoutError(), BackendTimeout),
        (ConnectionResetError(), BackendUnavailable),
        (ValueError("odd"), BackendUnavailable),
    ],
)
def test_error_mapping(exc: Exception, expected: type[BackendError]) -> None:
    mapped = map_error(exc, "aws backend 'aws': secret 'db'", version_asked=False)
    assert type(mapped) is expected
    assert "'db'" in str(mapped)


def test_malformed_version_ids_are_not_found_only_when_asked_for() -> None:
    exc = client_error("ValidationException")
    assert isinstance(map_error(exc, "w", version_asked=True), NotFound)
    assert type(map_error(exc, "w", version_asked=False)) is BackendUnavailable


def test_aws_messages_never_reach_ours() -> None:
    mapped = map_error(
        client_error("AccessDeniedException", message=CANARY), "w", version_asked=False
    )
    assert CANARY not in str(mapped)


def test_throttling_is_recognised_by_code_or_status() -> None:
    assert is_throttle(client_error("ThrottlingException"))
    assert is_throttle(client_error("TooManyRequestsException"))
    assert is_throttle(client_error("Anything", status=429))
    assert not is_throttle(client_error("ResourceNotFoundException"))
    assert not is_throttle(ValueError())


# -- the batcher --------------------------------------------------------------


class RecordingSource:
    """Answers reads from a dict and records how it was asked."""

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values = values
        self.singles: list[str] = []
        self.batches: list[list[str]] = []

    def _fetched(self, name: SecretName) -> Fetched:
        if name not in self.values:
            raise NotFound(f"secret {name!r}: no such secret")
        version = Version("v", frozenset({"current"}), WHEN, SecretValue(self.values[name]))
        return Fetched(name, version)

    async def single(self, name: SecretName) -> Fetched:
        self.singles.append(name)
        await asyncio.sleep(0)
        return self._fetched(name)

    async def many(self, names: Sequence[SecretName]) -> dict[SecretName, Fetched | SourceError]:
        self.batches.append(list(names))
        await asyncio.sleep(0)
        out: dict[SecretName, Fetched | SourceError] = {}
        for name in names:
            try:
                out[name] = self._fetched(name)
            except SOURCE_ERRORS as exc:
                out[name] = exc
        return out


async def test_batcher_groups_concurrent_reads_and_splits_at_the_size() -> None:
    source = RecordingSource({f"s{i}": f"v{i}".encode() for i in range(7)})
    batcher = CurrentBatcher(single=source.single, many=source.many, size=3)
    names = [SecretName(f"s{i}") for i in range(7)] + [SecretName("s0"), SecretName("gone")]
    results = await asyncio.gather(*(batcher.fetch(n) for n in names), return_exceptions=True)
    assert isinstance(results[-1], NotFound)
    assert [r.version.value.reveal() for r in results[:-1]] == [  # type: ignore[union-attr]
        *(f"v{i}".encode() for i in range(7)),
        b"v0",
    ]
    assert [len(b) for b in source.batches] == [3, 3, 2]
    assert source.singles == []
    await batcher.aclose()


async def test_batcher_sends_a_lone_read_as_a_single_call() -> None:
    source = RecordingSource({"a": b"1"})
    batcher = CurrentBatcher(single=source.single, many=source.many, size=20)
    assert (await batcher.fetch(SecretName("a"))).version.value.reveal() == b"1"
    with pytest.raises(NotFound):
        await batcher.fetch(SecretName("b"))
    assert (source.singles, source.batches) == (["a", "b"], [])
    await batcher.aclose()


async def test_batcher_close_releases_waiters() -> None:
    never = asyncio.Event()

    async def stuck(names: Sequence[SecretName]) -> dict[SecretName, Fetched | BackendError]:
        await never.wait()
        return {}

    source = RecordingSource({})
    batcher = CurrentBatcher(single=source.single, many=stuck, size=20)
    waiting = [asyncio.ensure_future(batcher.fetch(SecretName(n))) for n in ("a", "b")]
    await asyncio.sleep(0.01)
    await batcher.aclose()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(o, BadBackendAnswer) for o in outcomes)
