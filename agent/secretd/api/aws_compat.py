"""AWS Secrets Manager Agent compatible routes (SPEC §5), for secrets of any backend.

    GET /secretsmanager/get?secretId=NAME[&versionId=ID][&versionStage=STAGE][&refreshNow=true]
    GET /ping                                   -> 200 "healthy"

A success is GetSecretValue's shape, keys in the AWS agent's order: `ARN`,
`Name`, `VersionId`, `SecretString` (UTF-8 values) or `SecretBinary` (base64),
`VersionStages` (AWSCURRENT/AWSPREVIOUS/AWSPENDING, then custom labels),
`CreatedDate` as epoch seconds with milliseconds in a string ("1569534789.046").
`ARN` is AWS's own for secrets an AWS backend served; for other backends a
stable `arn:aws:secretsmanager:local:000000000000:secret:NAME`. Either form is
accepted back as a secretId. A local ARN carries the name itself. An AWS ARN
is mapped back to the name secretd serves it under (`arn_names`: the AWS
backend whose region and account it names, plus that backend's mount, so
`arn:...:secret:app/db-AbCdEf` from a backend mounted at `aws/` is
`aws/app/db`); access is decided on that name, an ARN no backend claims is
not found, and the answer must be the secret AWS reports under exactly that
ARN. A stale answer (docs/api.md) adds `X-Secretd-Stale: true`.

Errors are the AWS agent's: query mistakes are a 400 with a plain-text reason
("unknown parameter: x", "missing parameter secretId", "invalid refreshNow
value"; a repeated parameter is refused too, SPEC §4); everything else is a
Coral JSON body `{"__type":"...", "message":"..."}`:

    invalid name or label                 400 InvalidParameterException
    not allowed by [[allow]] (no backend asked)   400 AccessDeniedException
    no such secret / version / stage      400 ResourceNotFoundException
    per-caller backend request limit      429 ThrottlingException
    backend timed out                     504 TimeoutError
    backend unreachable, nothing usable   502 ConnectionError
    anything else                         500 {"__type":"InternalFailure"}

Access is checked exactly as for /v1/secrets (same caller, rules, audit lines,
metrics), before any backend is asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import orjson
from aiohttp import web
from multidict import MultiMapping

from secretd.api.deps import ApiDeps
from secretd.api.secrets import request_caller
from secretd.backends.aws_arn import parse_arn
from secretd.backends.aws_stages import from_aws_stage, to_aws_labels
from secretd.errors import (
    BackendError,
    BackendNotFound,
    BackendTimeout,
    Forbidden,
    InvalidName,
    InvalidRequest,
    NotFound,
    RateLimited,
    SecretdError,
)
from secretd.model import CachedSecret, Caller, SecretName

ArnLookup = Callable[[SecretName], "str | None"]
ArnNames = Callable[[str], "SecretName | None"]

LOCAL_ARN_PREFIX = "arn:aws:secretsmanager:local:000000000000:secret:"
PARAMS = frozenset({"secretId", "versionId", "versionStage", "refreshNow"})
_LABEL = re.compile(r"[A-Za-z0-9_.@+=\-]{1,256}")
_VERSION_ID = re.compile(r"[A-Za-z0-9_.@+=:/\-]{1,256}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NO_STORE = {"Cache-Control": "no-store"}


def add_routes(
    app: web.Application,
    deps: ApiDeps,
    *,
    arn_lookup: ArnLookup | None = None,
    arn_names: ArnNames | None = None,
) -> None:
    """Add GET /secretsmanager/get and GET /ping to `app`.

    `arn_lookup(name)` gives the real ARN of a secret an AWS backend served
    (see `aws_arn_lookup`); without it every ARN is the local form.
    `arn_names(arn)` (default: `deps.arn_names`, see `aws_arn_names`) maps an
    AWS ARN back to the name it is served under; without it the name part of
    the ARN is taken as it is.
    """
    names = arn_names or deps.arn_names
    routes = AwsCompatRoutes(deps, arn_lookup or (lambda _name: None), names)
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

    def __init__(
        self, deps: ApiDeps, arn_lookup: ArnLookup, arn_names: ArnNames | None = None
    ) -> None:
        self._deps = deps
        self._arn_lookup = arn_lookup
        self._arn_names = arn_names

    async def get_secret_value(self, request: web.Request) -> web.Response:
        try:
            query = parse_query(request.query)
        except QueryError as exc:
            return web.Response(status=400, text=str(exc), headers=_NO_STORE)
        try:
            caller = self._caller(request, query)
            name = self._authorized(caller, query)
            secret = await self._read(caller, name, query)
        except AwsError as exc:
            return exc.response()
        headers = dict(_NO_STORE)
        if secret.stale:
            headers["X-Secretd-Stale"] = "true"
        body = orjson.dumps(self.document(secret))
        return web.Response(body=body, content_type="application/json", headers=headers)

    def document(self, secret: CachedSecret) -> dict[str, str | list[str]]:
        version = secret.version
        document: dict[str, str | list[str]] = {
            "ARN": self._arn_lookup(secret.name) or LOCAL_ARN_PREFIX + secret.name,
            "Name": secret.name,
            "VersionId": version.version_id,
        }
        text = version.value.text()
        if text is not None:
            document["SecretString"] = text
        else:
            document["SecretBinary"] = version.value.b64()
        document["VersionStages"] = to_aws_labels(version.stages)
        document["CreatedDate"] = epoch_millis(version.created_at)
        return document

    def _caller(self, request: web.Request, query: Query) -> Caller:
        try:
            return request_caller(request, self._deps)
        except SecretdError as exc:  # no identity: refused like a rule would
            raise as_aws_error(exc, query) from None

    def _authorized(self, caller: Caller, query: Query) -> SecretName:
        try:
            name = self._name_of(query)
        except InvalidName as exc:
            raise AwsError(400, "InvalidParameterException", exc.message) from None
        if not self._deps.policy.allows(caller, name):
            self._deps.audit.record(
                "deny", secret=name, version_id=None, caller=caller, result="deny"
            )
            self._deps.metrics.read("forbidden")
            raise AwsError(400, "AccessDeniedException", f"not allowed to read {name}")
        return name

    def _name_of(self, query: Query) -> SecretName:
        """The name asked for; an AWS ARN mapped to the name secretd serves it under."""
        if query.arn is None or self._arn_names is None:
            return SecretName(query.secret_id)
        name = self._arn_names(query.arn)
        if name is None:  # no backend of ours has that region and account
            raise as_aws_error(NotFound("no backend serves that ARN"), query)
        return name

    async def _read(self, caller: Caller, name: SecretName, query: Query) -> CachedSecret:
        cache = self._deps.cache
        stage = from_aws_stage(query.stage) if query.stage is not None else None
        try:
            if query.refresh or query.version_id or stage or not cache.is_cached(name):
                self._deps.limiter.take(caller)  # these reach a backend: limited per caller
            secret = await cache.read(
                name,
                stage=None if query.version_id else stage,
                version_id=query.version_id,
                refresh=query.refresh,
            )
            if query.version_id and stage and stage not in secret.version.stages:
                raise NotFound(f"version of {name} has no stage {query.stage}")
            if query.arn is not None and self._arn_lookup(name) != query.arn:
                # Another secret of that name (deleted and re-created, another account).
                raise NotFound(f"{name} is not the secret with the ARN asked for")
        except SecretdError as exc:
            self._record(caller, name, None, exc.code)
            raise as_aws_error(exc, query) from None
        result = "stale" if secret.stale else "ok"
        self._record(caller, name, secret.version.version_id, result)
        return secret

    def _record(
        self, caller: Caller, name: SecretName, version_id: str | None, result: str
    ) -> None:
        self._deps.audit.record(
            "read", secret=name, version_id=version_id, caller=caller, result=result, api="aws"
        )
        self._deps.metrics.read(result)


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
    if isinstance(exc, NotFound | BackendNotFound):
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


class RouterView(Protocol):
    """What `aws_arn_names` needs of the router."""

    @property
    def backends(self) -> Mapping[str, object]: ...

    def full_name(self, backend_name: str, stripped: str) -> SecretName | None: ...


def aws_arn_names(router: RouterView) -> ArnNames:
    """An `arn_names` from the router: the full name of the secret an AWS ARN
    refers to, asking each AWS backend whether the ARN is its own (region and
    account) and adding that backend's mount. None when no backend claims it."""

    def names(arn: str) -> SecretName | None:
        for backend_name, backend in router.backends.items():
            name_for_arn = getattr(backend, "name_for_arn", None)
            stripped = name_for_arn(arn) if name_for_arn is not None else None
            if isinstance(stripped, str):
                full = router.full_name(backend_name, stripped)
                if full is not None:
                    return full
        return None

    return names


def aws_arn_lookup(
    route: Callable[[SecretName], tuple[object, SecretName]],
) -> ArnLookup:
    """An `arn_lookup` from the router: the AWS backend's ARN for names it serves.

    Pass `router.route`. Names no backend serves, and non-AWS backends, give None.
    """

    def lookup(name: SecretName) -> str | None:
        try:
            backend, stripped = route(name)
        except SecretdError:
            return None
        arn_for = getattr(backend, "arn_for", None)
        if arn_for is None:
            return None
        arn = arn_for(stripped)
        return arn if isinstance(arn, str) else None

    return lookup
