"""AWS Secrets Manager Agent compatible routes (docs/aws.md), for secrets of any backend.

    GET /secretsmanager/get?secretId=NAME[&versionId=ID][&versionStage=STAGE][&refreshNow=true]
    GET /ping                                   -> 200 "healthy"

A success is GetSecretValue's shape, keys in the AWS agent's order: `ARN`,
`Name`, `VersionId`, `SecretString` (UTF-8 values) or `SecretBinary` (base64),
`VersionStages` (AWSCURRENT/AWSPREVIOUS/AWSPENDING, then custom labels),
`CreatedDate` as epoch seconds with milliseconds in a string ("1569534789.046").
`ARN` is AWS's own for secrets an AWS backend served; for other backends a
stable `arn:aws:secretsmanager:local:000000000000:secret:NAME`. Either form is
accepted back as a secretId. A local ARN carries the name itself. An AWS ARN
is mapped back to the name secretd serves it under (`Served.arn_name`: the AWS
backend whose region and account it names, plus that backend's mount, so
`arn:...:secret:app/db-AbCdEf` from a backend mounted at `aws/` is
`aws/app/db`); access is decided on that name, an ARN no backend claims is
not found, and the answer must be the secret AWS reports under exactly that
ARN. A stale answer (docs/api.md) adds `X-Secretd-Stale: true`.

Errors are the AWS agent's: query mistakes are a 400 with a plain-text reason
("unknown parameter: x", "missing parameter secretId", "invalid refreshNow
value"; a repeated parameter is refused too, docs/api.md); everything else is a
Coral JSON body `{"__type":"...", "message":"..."}`:

    invalid name or label                 400 InvalidParameterException
    not allowed by [[allow]] (no backend asked)   400 AccessDeniedException
    no such secret / version / stage      400 ResourceNotFoundException
    per-caller backend request limit      429 ThrottlingException
    backend timed out                     504 TimeoutError
    backend unreachable, nothing usable   502 ConnectionError
    anything else                         500 {"__type":"InternalFailure"}

The read goes through the same `ReadService` as /v1/secrets (api.reads: same
caller, rules, limits, audit lines, metrics), access decided before any
backend is asked.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from aiohttp import web
from multidict import MultiMapping

from secretd.api.ports import ApiDeps
from secretd.api.reads import ReadService
from secretd.api.secrets import request_caller
from secretd.aws_stages import from_aws_stage, to_aws_labels
from secretd.backends.aws_arn import parse_arn
from secretd.errors import (
    BackendError,
    BackendTimeout,
    Forbidden,
    InvalidName,
    InvalidRequest,
    NotFound,
    RateLimited,
    SecretdError,
)
from secretd.model import CachedSecret, SecretName

LOCAL_ARN_PREFIX = "arn:aws:secretsmanager:local:000000000000:secret:"
PARAMS = frozenset({"secretId", "versionId", "versionStage", "refreshNow"})
_LABEL = re.compile(r"[A-Za-z0-9_.@+=\-]{1,256}")
_VERSION_ID = re.compile(r"[A-Za-z0-9_.@+=:/\-]{1,256}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_STORE = {"Cache-Control": "no-store"}


def add_routes(app: web.Application, deps: ApiDeps, reads: ReadService) -> None:
    """Add GET /secretsmanager/get and GET /ping to `app`."""
    routes = AwsCompatRoutes(deps, reads)
    app.router.add_get("/secretsmanager/get", routes.get_secret_value, allow_head=False)
    app.router.add_get("/ping", ping, allow_head=False)


async def ping(request: web.Request) -> web.Response:
    return web.Response(text="healthy")


class AwsError(Exception):
    """An AWS-agent-shaped error answer."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message

    def response(self) -> web.Response:
        if self.kind == "InternalFailure":
            body = b'{"__type":"InternalFailure"}'
        else:  # byte for byte the AWS agent's form, space included
            body = (
                b'{"__type":'
                + orjson.dumps(self.kind)
                + b', "message":'
                + orjson.dumps(self.message)
                + b"}"
            )
        return web.Response(
            status=self.status, body=body, content_type="application/json", headers=_NO_STORE
        )


class QueryError(Exception):
    """A malformed query: the AWS agent answers these 400 in plain text."""


class AwsCompatRoutes:
    """The /secretsmanager/get handler bound to its dependencies."""

    def __init__(self, deps: ApiDeps, reads: ReadService) -> None:
        self._deps = deps
        self._reads = reads

    async def get_secret_value(self, request: web.Request) -> web.Response:
        try:
            query = parse_query(request.query)
        except QueryError as exc:
            return web.Response(status=400, text=str(exc), headers=_NO_STORE)
        try:
            caller = request_caller(request, self._deps)
            name = self._name_of(query)
            stage = from_aws_stage(query.stage) if query.stage is not None else None
            return await self._reads.read(
                caller,
                name,
                functools.partial(self._answer, query=query, stage=stage),
                api="aws",
                stage=None if query.version_id else stage,
                version_id=query.version_id,
                refresh=query.refresh,
            )
        except SecretdError as exc:
            return as_aws_error(exc, query).response()
        except AwsError as exc:
            return exc.response()

    def _answer(self, secret: CachedSecret, *, query: Query, stage: str | None) -> web.Response:
        if query.version_id and stage and stage not in secret.version.stages:
            raise NotFound(f"version of {secret.name} has no stage {query.stage}")
        if query.arn is not None and secret.arn != query.arn:
            # Another secret of that name (deleted and re-created, another account).
            raise NotFound(f"{secret.name} is not the secret with the ARN asked for")
        headers = dict(_NO_STORE)
        if secret.stale:
            headers["X-Secretd-Stale"] = "true"
        body = orjson.dumps(document(secret))
        return web.Response(body=body, content_type="application/json", headers=headers)

    def _name_of(self, query: Query) -> SecretName:
        """The name asked for; an AWS ARN mapped to the name secretd serves it under."""
        if query.arn is None:
            try:
                return SecretName(query.secret_id)
            except InvalidName as exc:
                raise AwsError(400, "InvalidParameterException", exc.message) from None
        name = self._deps.served().arn_name(query.arn)
        if name is None:  # no backend of ours has that region and account
            raise as_aws_error(NotFound("no backend serves that ARN"), query)
        return name


def document(secret: CachedSecret) -> dict[str, str | list[str]]:
    """GetSecretValue's shape, keys in the AWS agent's order."""
    version = secret.version
    answer: dict[str, str | list[str]] = {
        "ARN": secret.arn or LOCAL_ARN_PREFIX + secret.name,
        "Name": secret.name,
        "VersionId": version.version_id,
    }
    text = version.value.text()
    if text is not None:
        answer["SecretString"] = text
    else:
        answer["SecretBinary"] = version.value.b64()
    answer["VersionStages"] = to_aws_labels(version.stages)
    answer["CreatedDate"] = epoch_millis(version.created_at)
    return answer


@dataclass(frozen=True, slots=True)
class Query:
    """The parsed /secretsmanager/get parameters."""

    secret_id: str
    version_id: str | None
    stage: str | None
    refresh: bool
    arn: str | None = None  # an AWS ARN given as secretId: the answer must be that secret


def parse_query(query: MultiMapping[str]) -> Query:
    """The AWS agent's parameters; unknown, repeated or malformed ones raise QueryError."""
    values: dict[str, str] = {}
    for key, value in query.items():
        if key not in PARAMS:
            shown = key if len(key) <= 40 and key.isprintable() else "(unprintable)"
            raise QueryError(f"unknown parameter: {shown}")
        if key in values:
            raise QueryError(f"duplicate parameter: {key}")
        values[key] = value
    secret_id = values.get("secretId", "")
    if not secret_id:
        raise QueryError("missing parameter secretId")
    arn = None
    aws_arn = parse_arn(secret_id)
    if secret_id.startswith(LOCAL_ARN_PREFIX):
        secret_id = secret_id.removeprefix(LOCAL_ARN_PREFIX)
    elif aws_arn is not None:
        arn, secret_id = secret_id, aws_arn.name
    refresh = values.get("refreshNow", "false").lower()
    if refresh not in ("true", "1", "false", "0"):
        raise QueryError("invalid refreshNow value")
    version_id, stage = values.get("versionId"), values.get("versionStage")
    if version_id is not None and _VERSION_ID.fullmatch(version_id) is None:
        raise QueryError("invalid versionId value")
    if stage is not None and _LABEL.fullmatch(stage) is None:
        raise QueryError("invalid versionStage value")
    return Query(secret_id, version_id, stage, refresh in ("true", "1"), arn)


def as_aws_error(exc: SecretdError, query: Query) -> AwsError:
    """A secretd error as the AWS agent would report the matching AWS failure."""
    if isinstance(exc, NotFound | NotFound):
        if query.version_id is not None:
            what = f"secret value for VersionId: {query.version_id}"
        elif query.stage is not None:
            what = f"secret value for staging label: {query.stage}"
        else:
            what = "secret"
        return AwsError(
            400, "ResourceNotFoundException", f"Secrets Manager can't find the specified {what}."
        )
    if isinstance(exc, Forbidden):
        return AwsError(400, "AccessDeniedException", exc.message)
    if isinstance(exc, InvalidName | InvalidRequest):
        return AwsError(400, "InvalidParameterException", exc.message)
    if isinstance(exc, RateLimited):
        return AwsError(429, "ThrottlingException", "Rate exceeded")
    if isinstance(exc, BackendTimeout):
        return AwsError(504, "TimeoutError", "Timeout")
    if isinstance(exc, BackendError):
        return AwsError(502, "ConnectionError", "Read Error")
    return AwsError(500, "InternalFailure", "")


def epoch_millis(moment: datetime) -> str:
    """'1569534789.046': epoch seconds with exactly three decimals (truncated)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    millis = (aware - _EPOCH) // timedelta(milliseconds=1)
    seconds, rest = divmod(millis, 1000)
    return f"{seconds}.{rest:03d}"
