"""A fake AWS Secrets Manager on 127.0.0.1 (aiohttp) that answers honestly or with hostility.

It speaks the JSON protocol (`POST /`, `X-Amz-Target: secretsmanager.OP`,
`application/x-amz-json-1.1`) for the operations the AWS backend uses:
GetSecretValue, BatchGetSecretValue, ListSecrets and DescribeSecret. Requests
are not authenticated (any test credentials do). Honest answers carry AWS's
shapes, ARNs included (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX`).
`misbehave(case)` makes every GetSecretValue (and BatchGetSecretValue) hostile:

    oversize       a 200 streaming a SecretBinary of `oversize_bytes` (default 100 MiB)
    drip           a 200 whose body arrives one byte every 100 ms, for minutes
    hang           headers never come
    truncated      a 200 whose JSON stops half-way (its Content-Length is honest)
    wrong_shape    a 200 whose JSON is valid but not GetSecretValue's shape
    wrong_name     the answer is for another secret
    wrong_version  a read by VersionId is answered with another VersionId
    rollback       the answer is the previous version, labelled AWSCURRENT
    redirect       a 307 to /elsewhere, which answers as if for the secret (with
                   REDIRECTED as its value); `hits["elsewhere"]` counts who followed
    storm          every call is throttled (400 ThrottlingException)
    wrong_account  the ARN names another account
    wrong_region   the ARN names another region
    wrong_arn_name the ARN names another secret

`misbehave(case, only=NAME)` limits the hostility to one secret. `hits`
counts requests by operation.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.loopback_app import LoopbackApp

REGION = "us-east-1"
ACCOUNT = "123456789012"
JSON_TYPE = "application/x-amz-json-1.1"
DRIP_INTERVAL = 0.1
HANG_SECONDS = 300.0
CHUNK = 64 * 1024
REDIRECTED = "canary-redirected-4c2e"
CASES = (
    "oversize",
    "drip",
    "hang",
    "truncated",
    "wrong_shape",
    "wrong_name",
    "wrong_version",
    "rollback",
    "redirect",
    "storm",
    "wrong_account",
    "wrong_region",
    "wrong_arn_name",
)


@dataclass
class FakeSecret:
    name: str
    arn: str
    versions: list[tuple[str, str | bytes]] = field(default_factory=list)  # (id, value)

    def entry(self, index: int = -1) -> dict[str, Any]:
        """GetSecretValue's answer for one version (the newest by default)."""
        position = index % len(self.versions)
        version_id, value = self.versions[position]
        stages = ["AWSCURRENT"] if position == len(self.versions) - 1 else ["AWSPREVIOUS"]
        document: dict[str, Any] = {
            "ARN": self.arn,
            "Name": self.name,
            "VersionId": version_id,
            "VersionStages": stages,
            "CreatedDate": 1767225600.0 + position,
        }
        if isinstance(value, bytes):
            document["SecretBinary"] = base64.b64encode(value).decode()
        else:
            document["SecretString"] = value
        return document


class HostileAws(LoopbackApp):
    """See the module docstring. `async with HostileAws() as aws:` serves on aws.url."""

    def __init__(self, *, region: str = REGION, account: str = ACCOUNT) -> None:
        super().__init__()
        self.region = region
        self.account = account
        self.secrets: dict[str, FakeSecret] = {}
        self.case: str | None = None
        self.only: str | None = None  # the one secret `case` applies to (None: all)
        self.oversize_bytes = 100 * 1024 * 1024
        self.hits: collections.Counter[str] = collections.Counter()

    def arn(self, name: str, *, region: str | None = None, account: str | None = None) -> str:
        suffix = secrets.token_hex(3)[:6]
        return (
            f"arn:aws:secretsmanager:{region or self.region}:{account or self.account}"
            f":secret:{name}-{suffix}"
        )

    def put(self, name: str, value: str | bytes) -> str:
        """A new current version of `name` (created when new); its VersionId."""
        secret = self.secrets.get(name)
        if secret is None:
            secret = self.secrets[name] = FakeSecret(name, self.arn(name))
        version_id = secrets.token_hex(16)
        secret.versions.append((version_id, value))
        return version_id

    def misbehave(self, case: str | None, *, only: str | None = None) -> None:
        if case is not None and case not in CASES:
            raise ValueError(f"unknown case {case!r}")
        self.case, self.only = case, only

    def _case_for(self, secret: FakeSecret) -> str | None:
        return self.case if self.only in (None, secret.name) else None

    def application(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_post("/", self._handle)
        app.router.add_post("/elsewhere", self._elsewhere)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        op = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        self.hits[op] += 1
        params = json.loads(await request.read() or b"{}")
        if self.case == "storm":
            return error(400, "ThrottlingException", "Rate exceeded")
        if op == "GetSecretValue":
            return await self._get(request, params)
        if op == "BatchGetSecretValue":
            return await self._batch(request, params)
        if op in ("ListSecrets", "DescribeSecret"):
            return self._list(op, params)
        return error(400, "InvalidAction", op)

    async def _get(self, request: web.Request, params: dict[str, Any]) -> web.StreamResponse:
        secret = self.secrets.get(str(params.get("SecretId")))
        if secret is None:
            return error(400, "ResourceNotFoundException", "not found")
        hostile = await self._hostile(request, secret)
        if hostile is not None:
            return hostile
        index = -1
        wanted = params.get("VersionId")
        if wanted is not None:
            ids = [v for v, _ in secret.versions]
            if wanted not in ids:
                return error(400, "ResourceNotFoundException", "no such version")
            index = ids.index(wanted)
        return answer(self._doctored(secret, secret.entry(index), by_id=wanted is not None))

    async def _batch(self, request: web.Request, params: dict[str, Any]) -> web.StreamResponse:
        values, errors = [], []
        for name in params.get("SecretIdList", []):
            secret = self.secrets.get(name)
            if secret is None:
                errors.append({"SecretId": name, "ErrorCode": "ResourceNotFoundException"})
                continue
            hostile = await self._hostile(request, secret)
            if hostile is not None:
                return hostile
            values.append(self._doctored(secret, secret.entry(), by_id=False))
        return answer({"SecretValues": values, "Errors": errors})

    def _list(self, op: str, params: dict[str, Any]) -> web.Response:
        entries = [
            {
                "ARN": s.arn,
                "Name": s.name,
                "SecretVersionsToStages": {s.versions[-1][0]: ["AWSCURRENT"]},
            }
            for s in self.secrets.values()
        ]
        if op == "DescribeSecret":
            found = [e for e in entries if e["Name"] == params.get("SecretId")]
            return answer(found[0]) if found else error(400, "ResourceNotFoundException", "-")
        return answer({"SecretList": entries})

    async def _hostile(self, request: web.Request, secret: FakeSecret) -> web.StreamResponse | None:
        case = self._case_for(secret)
        if case == "oversize":
            return await stream_binary(request, secret, self.oversize_bytes)
        if case == "drip":
            return await drip(request)
        if case == "hang":
            await asyncio.sleep(HANG_SECONDS)
        if case == "truncated":
            whole = json.dumps(secret.entry()).encode()
            return web.Response(body=whole[: len(whole) // 2], content_type=JSON_TYPE)
        if case == "wrong_shape":
            return answer({"SecretList": "not a secret", "Name": ["x"]})
        if case == "redirect":
            raise web.HTTPTemporaryRedirect("/elsewhere")
        return None

    async def _elsewhere(self, request: web.Request) -> web.Response:
        self.hits["elsewhere"] += 1
        params = json.loads(await request.read() or b"{}")
        secret = self.secrets.get(str(params.get("SecretId")))
        if secret is None:
            return error(400, "ResourceNotFoundException", "not found")
        entry = secret.entry()
        entry.pop("SecretBinary", None)
        entry["SecretString"] = REDIRECTED
        return answer(entry)

    def _doctored(
        self, secret: FakeSecret, entry: dict[str, Any], *, by_id: bool
    ) -> dict[str, Any]:
        case = self._case_for(secret)
        if case == "wrong_name":
            entry["Name"] = secret.name + "-other"
        elif case == "wrong_version" and by_id:  # a current read cannot tell
            entry["VersionId"] = "f" * 32
        elif case == "rollback" and len(secret.versions) > 1:
            entry = secret.entry(-2)
            entry["VersionStages"] = ["AWSCURRENT"]
        elif case == "wrong_account":
            entry["ARN"] = self.arn(secret.name, account="999999999999")
        elif case == "wrong_region":
            entry["ARN"] = self.arn(secret.name, region="ap-south-2")
        elif case == "wrong_arn_name":
            entry["ARN"] = self.arn(secret.name + "x")
        return entry


def answer(document: dict[str, Any]) -> web.Response:
    return web.Response(body=json.dumps(document).encode(), content_type=JSON_TYPE)


def error(status: int, code: str, message: str) -> web.Response:
    body = json.dumps({"__type": code, "message": message}).encode()
    return web.Response(status=status, body=body, content_type=JSON_TYPE)


async def stream_binary(request: web.Request, secret: FakeSecret, size: int) -> web.StreamResponse:
    """A GetSecretValue answer whose SecretBinary is `size` bytes (base64: 4/3 as
    many on the wire), generated as it is sent, never held whole."""
    entry = secret.entry()
    entry.pop("SecretString", None)
    entry["SecretBinary"] = "@"
    head, _, tail = json.dumps(entry).encode().partition(b"@")
    encoded = (size + 2) // 3 * 4
    response = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE})
    response.content_length = len(head) + encoded + len(tail)
    await response.prepare(request)
    block = base64.b64encode(b"\x00" * (CHUNK // 4 * 3))
    with contextlib.suppress(ConnectionError):
        await response.write(head)
        left = encoded
        while left > 0:
            piece = block[: min(len(block), left)]
            await response.write(piece)
            left -= len(piece)
        await response.write(tail)
    return response


async def drip(request: web.Request) -> web.StreamResponse:
    """A 200 whose JSON body arrives one byte every DRIP_INTERVAL for minutes."""
    response = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE})
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await response.write(b'{"Name": ')
        for _ in range(int(HANG_SECONDS / DRIP_INTERVAL)):
            await asyncio.sleep(DRIP_INTERVAL)
            await response.write(b" ")
    return response
