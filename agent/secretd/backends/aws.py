"""AWS Secrets Manager backend over aiobotocore (the optional `secretd[aws]` extra).

- Credentials: botocore's full default chain (environment, shared files and
  profiles, SSO, web identity, ECS/EC2 metadata); `profile`, `region` and
  `endpoint_url` from `[backends.NAME]`.
- `fetch`: GetSecretValue by VersionId or VersionStage (current/previous/pending
  <-> AWSCURRENT/AWSPREVIOUS/AWSPENDING; custom labels pass through).
  SecretString is the value's UTF-8 bytes, SecretBinary the raw bytes.
- `fetch_many`: BatchGetSecretValue, 20 names a call; falls back to one
  GetSecretValue per name when the credentials may not call the batch API.
  Concurrent `fetch` calls for current versions are coalesced the same way
  (aws_batcher.py), so a cache loading declared secrets a few at a time still
  loads them in batches.
- `current_versions`: ListSecrets-based, see aws_versions.py.
- Every call runs under `asyncio.timeout(config.timeout)` and a semaphore of
  `max_concurrency`. botocore's own retries are off (one attempt each), so the
  only backoff is ours: throttling (a 400 with a throttling code, or any 429)
  is retried with full jitter within the timeout; an outage is raised at once
  and the cache's refresh backoff takes it from there. No double backoff.
- `regions = [...]` (replicated secrets): one client per region; reads go to
  the region serving now and, on an outage there - a connection error, a
  timeout, a 5xx answer; never throttling, never a 4xx - to the next ones, each
  within its own timeout (backends/replicas.py). The first region is taken
  back once it has answered DescribeSecret probes for `failback_after`. Writes
  (rotation, aws_write.py) go to the first region only: replicas are read-only.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import random
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

import structlog

from secretd.backends.aws_answers import Asked, parse_secret_value
from secretd.backends.aws_arn import ArnCheck
from secretd.backends.aws_batcher import CurrentBatcher
from secretd.backends.aws_errors import code_to_error, is_outage, is_throttle, map_error
from secretd.backends.aws_versions import VersionLister
from secretd.backends.replicas import Replicas
from secretd.backoff import Backoff
from secretd.clock import Clock, SystemClock
from secretd.config.schema import AwsBackendConfig
from secretd.errors import (
    SOURCE_ERRORS,
    BackendAuthError,
    BadBackendAnswer,
    ConfigError,
    NotFound,
    SourceError,
)
from secretd.model import Fetched, SecretName
from secretd.state import StateDir

log = structlog.get_logger(__name__)

BATCH_SIZE = 20  # BatchGetSecretValue's SecretIdList limit
BATCH_RETRY_AFTER = 3600.0  # after a refusal, read one by one this long, then try again
THROTTLE_ATTEMPTS = 5
BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0
# Throttling retried with full jitter, within the call's timeout.
THROTTLE_RETRY = Backoff(base=BACKOFF_BASE, cap=BACKOFF_CAP, jitter=1.0)
MAX_REMEMBERED_ARNS = 100_000
# What a failback probe describes: any answer, "no such secret" included, is a live region.
PROBE_SECRET = "secretd/failback-probe"  # noqa: S105 - a name, not a password


async def open_backend(
    name: str,
    config: AwsBackendConfig,
    *,
    max_secret_bytes: int,
    state: StateDir | None = None,
    rng: random.Random | None = None,
    clock: Clock | None = None,
) -> AwsBackend:
    """Create the aiobotocore client inside the running loop and wrap it."""
    del state  # nothing of AWS's is kept across restarts
    try:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import AioSession
        from botocore.exceptions import BotoCoreError

        from secretd.backends.aws_http import capped_session_class
    except ImportError:
        raise ConfigError(
            f"backend {name!r}: type = 'aws' needs aiobotocore; install secretd[aws]"
        ) from None
    if config.endpoint_url is not None and not config.endpoint_url.startswith(
        ("http://", "https://")
    ):
        raise ConfigError(f"backends.{name}.endpoint_url: expected an http:// or https:// URL")
    client_config = AioConfig(
        connect_timeout=min(config.timeout, 5.0),
        read_timeout=config.timeout,
        retries={"mode": "standard", "total_max_attempts": 1},
        max_pool_connections=config.max_concurrency,
        user_agent_extra="secretd",
        http_session_cls=capped_session_class(max_secret_bytes),
    )
    stack = AsyncExitStack()
    clients = []
    try:
        session = AioSession(profile=config.profile)
        for index, region in enumerate(config.region_list):
            client = session.create_client(
                "secretsmanager",
                region_name=region,
                endpoint_url=config.endpoint_for(index),
                config=client_config,
            )
            clients.append(await stack.enter_async_context(client))
    except (BotoCoreError, ValueError) as exc:
        await stack.aclose()
        raise ConfigError(f"backend {name!r}: cannot set up the AWS client: {exc}") from None
    clock = clock or SystemClock()
    regions = [str(client.meta.region_name) for client in clients]
    return AwsBackend(
        name,
        client=clients[0],
        replica_clients=clients[1:],
        timeout=config.timeout,
        max_concurrency=config.max_concurrency,
        max_secret_bytes=max_secret_bytes,
        rng=rng or random.Random(),  # noqa: S311 - jitter, not cryptography
        closer=stack,
        versions_max_age=config.versions_max_age,
        clock=clock,
        arns=ArnCheck(region=regions, account=config.account_id),
        replicas=Replicas(regions, backend=name, failback_after=config.failback_after, clock=clock),
    )


class AwsBackend:
    """Reads AWS Secrets Manager through one aiobotocore client (one per region)."""

    # One ListSecrets answers many names' version checks: the cache checks this
    # backend's secrets together (cache/refreshing.py).
    checks_in_bulk = True

    def __init__(
        self,
        name: str,
        *,
        client: Any,
        timeout: float,
        max_concurrency: int,
        max_secret_bytes: int,
        rng: random.Random,
        closer: AsyncExitStack | None = None,
        versions_max_age: float = 60.0,
        clock: Clock | None = None,
        arns: ArnCheck | None = None,
        replica_clients: Sequence[Any] = (),
        replicas: Replicas | None = None,
    ) -> None:
        self.name = name
        self._arn_check = arns or ArnCheck(region=None)
        self._clients = [client, *replica_clients]  # the first region's first
        self._timeout = timeout
        self._slots = asyncio.Semaphore(max_concurrency)
        self._max_secret_bytes = max_secret_bytes
        self._rng = rng
        self._closer = closer
        self._arns: dict[SecretName, str] = {}
        self._clock = clock or SystemClock()
        self.replicas = replicas or Replicas(
            [str(client.meta.region_name)], backend=name, failback_after=60.0, clock=self._clock
        )
        self._batch_refused_at: float | None = None
        self._lister = VersionLister(
            self._call,
            backend=name,
            remember_arn=self._listed_arn,
            max_age=versions_max_age,
            monotonic=self._clock.monotonic,
        )
        self._batcher = CurrentBatcher(
            single=self._fetch_one, many=self.fetch_many, size=BATCH_SIZE
        )
        # Real HTTP requests sent, per operation (retries included): for status and benches.
        self.api_calls: collections.Counter[str] = collections.Counter()
        for each in self._clients:
            each.meta.events.register("before-send.secrets-manager", self._count_request)

    async def fetch(
        self,
        name: SecretName,
        *,
        version_id: str | None = None,
        stage: str | None = None,
    ) -> Fetched:
        if version_id is None and stage is None and self._batch_allowed():
            return await self._batcher.fetch(name)  # concurrent reads share a batch call
        return await self._fetch_one(name, version_id=version_id, stage=stage)

    async def _fetch_one(
        self, name: SecretName, *, version_id: str | None = None, stage: str | None = None
    ) -> Fetched:
        """One GetSecretValue."""
        asked = Asked(name, version_id=version_id, stage=None if version_id else stage)
        params: dict[str, Any] = {"SecretId": name}
        if asked.version_id is not None:
            params["VersionId"] = asked.version_id
        else:
            # Always explicit: AWS defaults to AWSCURRENT anyway, and some stand-ins
            # (moto) answer a stale default version after UpdateSecretVersionStage.
            params["VersionStage"] = asked.label
        where = f"aws backend {self.name!r}: secret {name!r}"
        try:
            answer = await self._call(
                "get_secret_value", where, version_asked=version_id is not None, **params
            )
        except NotFound:
            if version_id is None and stage is None:
                self._lister.note(name, None)
            raise
        fetched = self._parse(answer, asked)
        if fetched.version.is_current:
            self._lister.note(name, fetched.version.version_id)
        return fetched

    async def current_versions(self, names: Sequence[SecretName]) -> Mapping[SecretName, str]:
        """Current version ids via ListSecrets (absent: not found or scheduled for deletion)."""
        return await self._lister.current_versions(names)

    async def fetch_many(
        self, names: Iterable[SecretName]
    ) -> dict[SecretName, Fetched | SourceError]:
        """The current version of each name, BATCH_SIZE names per BatchGetSecretValue call.

        Every name gets an answer: its Fetched or the error for it alone.
        """
        unique = list(dict.fromkeys(names))
        chunks = [unique[i : i + BATCH_SIZE] for i in range(0, len(unique), BATCH_SIZE)]
        results: dict[SecretName, Fetched | SourceError] = {}
        async with asyncio.TaskGroup() as group:
            for chunk in chunks:
                group.create_task(self._fetch_chunk(chunk, results))
        return results

    def _batch_allowed(self) -> bool:
        """False for a while after AWS refused BatchGetSecretValue to our credentials
        (the permission may be missing, or an IAM change may not have spread yet)."""
        refused = self._batch_refused_at
        return refused is None or self._clock.monotonic() - refused >= BATCH_RETRY_AFTER

    def arn_for(self, name: SecretName) -> str | None:
        """The ARN AWS last reported for `name` (None until it was read or listed)."""
        return self._arns.get(name)

    def name_for_arn(self, arn: str) -> SecretName | None:
        """The name an ARN of this backend's region and account refers to, else None."""
        return self._arn_check.name_of(arn)

    async def run(self) -> None:
        """With several regions: take the first back once it answers again."""
        await self.replicas.run(self._probe)

    async def _probe(self, index: int) -> bool:
        """Whether region `index` answers at all (not found, denied, throttled: it does)."""
        try:
            async with asyncio.timeout(self._timeout):
                await self._clients[index].describe_secret(SecretId=PROBE_SECRET)
        except Exception as exc:
            return not is_outage(exc)
        return True

    async def aclose(self) -> None:
        await self._batcher.aclose()
        if self._closer is not None:
            closer, self._closer = self._closer, None
            await closer.aclose()

    async def _fetch_chunk(
        self, chunk: list[SecretName], results: dict[SecretName, Fetched | SourceError]
    ) -> None:
        if self._batch_allowed():
            try:
                batch = await self._batch(chunk)
            except BackendAuthError:
                # Credentials may lack secretsmanager:BatchGetSecretValue: read one by one.
                self._batch_refused_at = self._clock.monotonic()
                log.warning("aws.batch_refused", backend=self.name)
            except SOURCE_ERRORS as exc:
                results.update(dict.fromkeys(chunk, exc))
                return
            else:
                results.update(batch)
                # A name whose batch answer failed its checks (a rotation racing the
                # batch, a stand-in's quirk) gets one direct read before it is given up.
                chunk = [n for n, r in batch.items() if isinstance(r, BadBackendAnswer)]
        for name in chunk:
            try:
                results[name] = await self._fetch_one(name)
            except SOURCE_ERRORS as exc:
                results[name] = exc

    async def _batch(self, chunk: list[SecretName]) -> dict[SecretName, Fetched | SourceError]:
        where = f"aws backend {self.name!r}: batch of {len(chunk)} secrets"
        wanted = set(chunk)
        results: dict[SecretName, Fetched | SourceError] = {}
        params: dict[str, Any] = {"SecretIdList": chunk}
        for _ in range(BATCH_SIZE):  # pages; AWS answers a 20-name list in one
            answer = await self._call("batch_get_secret_value", where, **params)
            self._take_batch_values(answer.get("SecretValues", []), wanted, results)
            self._take_batch_errors(answer.get("Errors", []), wanted, results)
            token = answer.get("NextToken")
            if not isinstance(token, str) or not token or wanted.issubset(results):
                break
            params["NextToken"] = token
        for name in wanted.difference(results):
            results[name] = BadBackendAnswer(
                f"aws backend {self.name!r}: secret {name!r}: the batch answer left it out"
            )
        return results

    def _take_batch_values(
        self,
        values: object,
        wanted: set[SecretName],
        results: dict[SecretName, Fetched | SourceError],
    ) -> None:
        if not isinstance(values, list):
            return
        for item in values:
            name = item.get("Name") if isinstance(item, dict) else None
            if name not in wanted:
                continue  # not ours to take; a missing name is reported below
            secret = SecretName(name)
            try:
                fetched = self._parse(item, Asked(secret))
            except SOURCE_ERRORS as exc:
                results[secret] = exc
                continue
            results[secret] = fetched
            self._lister.note(secret, fetched.version.version_id)

    def _take_batch_errors(
        self,
        errors: object,
        wanted: set[SecretName],
        results: dict[SecretName, Fetched | SourceError],
    ) -> None:
        if not isinstance(errors, list):
            return
        for item in errors:
            if not isinstance(item, dict) or item.get("SecretId") not in wanted:
                continue
            secret = SecretName(item["SecretId"])
            code = item.get("ErrorCode")
            message = str(item.get("Message", "")).lower()
            error = code_to_error(
                code if isinstance(code, str) else "Unknown",
                400,
                f"aws backend {self.name!r}: secret {secret!r}",
                deleted="deleted" in message or "deletion" in message,
            )
            results[secret] = error
            if isinstance(error, NotFound):
                self._lister.note(secret, None)

    def _parse(self, answer: object, asked: Asked) -> Fetched:
        fetched, arn = parse_secret_value(
            answer, asked, backend=self.name, max_secret_bytes=self._max_secret_bytes
        )
        where = f"aws backend {self.name!r}: secret {asked.name!r}"
        checked = self._arn_check.check(arn, asked.name, where)
        if checked is None:
            return fetched
        self._remember_arn(asked.name, checked)
        return dataclasses.replace(fetched, arn=checked)

    def _listed_arn(self, name: SecretName, arn: str) -> None:
        """A listing's ARN, remembered only when it passes the same checks."""
        try:
            checked = self._arn_check.check(
                arn, name, f"aws backend {self.name!r}: secret {name!r}"
            )
        except BadBackendAnswer as exc:
            log.warning("aws.arn_refused", backend=self.name, error=exc.message)
            return
        if checked is not None:
            self._remember_arn(name, checked)

    def _remember_arn(self, name: SecretName, arn: str) -> None:
        if len(self._arns) >= MAX_REMEMBERED_ARNS and name not in self._arns:
            self._arns.clear()  # rare and harmless: ARNs come back with the next read
        self._arns[name] = arn

    async def _call(
        self, op: str, where: str, *, version_asked: bool = False, **params: Any
    ) -> dict[str, Any]:
        """One read operation: bounded in time, throttling retried with full jitter;
        on an outage of the serving region, the next regions (module docstring)."""
        replicas = self.replicas
        error: Exception | None = None
        for index in replicas.order():
            try:
                async with asyncio.timeout(self._timeout), self._slots:
                    return await self._attempts(op, params, index)
            except Exception as exc:
                if not replicas.several or not is_outage(exc):
                    raise map_error(exc, where, version_asked=version_asked) from None
                error = exc
                mapped = map_error(exc, where, version_asked=version_asked)
                replicas.failed(index, f"{replicas.endpoints[index]}: {mapped.message}")
        assert error is not None
        raise map_error(error, where, version_asked=version_asked) from None

    async def _attempts(self, op: str, params: dict[str, Any], index: int = 0) -> dict[str, Any]:
        """`op` on the client of region `index` (writes: always the first)."""
        method = getattr(self._clients[index], op)
        for attempt in range(THROTTLE_ATTEMPTS):
            try:
                answer = await method(**params)
            except Exception as exc:
                if not is_throttle(exc) or attempt == THROTTLE_ATTEMPTS - 1:
                    raise
                delay = THROTTLE_RETRY.delay(attempt + 1, self._rng)
                log.info("aws.throttled", backend=self.name, op=op, retry_in=round(delay, 3))
                await self._clock.sleep(delay)
                continue
            if not isinstance(answer, dict):
                raise BadBackendAnswer(f"aws backend {self.name!r}: {op} answered no object")
            return answer
        raise AssertionError("unreachable")  # pragma: no cover

    def _count_request(self, event_name: str = "", **_: Any) -> None:
        self.api_calls[event_name.rsplit(".", 1)[-1]] += 1
