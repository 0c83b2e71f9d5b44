"""Maps botocore/aiohttp failures to secretd's BackendError tree.

    ResourceNotFoundException, a deleted or scheduled-for-deletion secret
    (InvalidRequestException "...deleted" / "...marked for deletion"),
    a malformed VersionId asked for explicitly       -> NotFound
    ThrottlingException & co., any HTTP 429          -> throttled (retried by the caller, then
                                                        BackendUnavailable)
    AccessDenied, bad/expired credentials, no creds  -> BackendAuthError
    connect/read timeouts                             -> BackendTimeout
    anything else from botocore, aiohttp, the OS      -> BackendUnavailable
    an answer botocore could not parse               -> BadBackendAnswer
    an answer aws_http refused (over its cap, cut
    short, not JSON): AnswerRefused                   -> BadBackendAnswer

`is_outage` says which failures mean a region is out (a timeout, no
connection, a 5xx) and so move a backend with several regions to the next.

Messages name the backend, the operation, the secret and AWS's error code;
never AWS's free-text message (it is not ours to vouch for) and never a value.
botocore is imported lazily: this module loads without the `secretd[aws]` extra.
"""

from __future__ import annotations

from typing import Any

from secretd.errors import (
    SOURCE_ERRORS,
    BackendAuthError,
    BackendTimeout,
    BackendUnavailable,
    BadBackendAnswer,
    NotFound,
    SourceError,
)

THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "ThrottledException",
        "SlowDown",
    }
)
AUTH_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignature",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "ExpiredToken",
        "MissingAuthenticationToken",
        "SignatureDoesNotMatch",
    }
)
_VERSION_CODES = frozenset({"ValidationException", "InvalidParameterException"})


class AnswerRefused(Exception):
    """An answer aws_http would not hand to botocore; the reason names no value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def error_code(exc: BaseException) -> tuple[str, int] | None:
    """(AWS error code, HTTP status) of a botocore ClientError, else None."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    error = response.get("Error")
    meta = response.get("ResponseMetadata")
    code = error.get("Code") if isinstance(error, dict) else None
    status = meta.get("HTTPStatusCode") if isinstance(meta, dict) else None
    return (
        code if isinstance(code, str) else "Unknown",
        status if isinstance(status, int) else 0,
    )


def is_throttle(exc: BaseException) -> bool:
    """Throttling, whether AWS says it with a 400 and a code or with a 429."""
    found = error_code(exc)
    return found is not None and (found[0] in THROTTLE_CODES or found[1] == 429)


def is_deleted_message(exc: BaseException) -> bool:
    """InvalidRequestException saying the secret is deleted or marked for deletion."""
    response: Any = getattr(exc, "response", None)
    try:
        message = str(response["Error"].get("Message", "")).lower()
    except (TypeError, KeyError, AttributeError):
        return False
    return "deleted" in message or "deletion" in message


def code_to_error(code: str, status: int, where: str, *, deleted: bool) -> SourceError:
    """The error for one AWS error code (also used for BatchGetSecretValue's Errors)."""
    if code == "ResourceNotFoundException":
        return NotFound(f"{where}: no such secret or version")
    if code == "InvalidRequestException" and deleted:
        return NotFound(f"{where}: the secret is deleted or scheduled for deletion")
    if code in AUTH_CODES:
        return BackendAuthError(f"{where}: AWS refused our credentials ({code})")
    if code in THROTTLE_CODES or status == 429:
        return BackendUnavailable(f"{where}: throttled by AWS ({code}); gave up after retries")
    return BackendUnavailable(f"{where}: AWS answered {code} (HTTP {status})")


def map_error(exc: Exception, where: str, *, version_asked: bool) -> SourceError:
    """Any exception from one aiobotocore call as a BackendError naming `where`."""
    if isinstance(exc, SOURCE_ERRORS):
        return exc
    if isinstance(exc, AnswerRefused):
        return BadBackendAnswer(f"{where}: {exc.reason}")
    if isinstance(exc, TimeoutError):
        return BackendTimeout(f"{where}: no answer in time")
    found = error_code(exc)
    if found is not None:
        code, status = found
        if version_asked and code in _VERSION_CODES:
            return NotFound(f"{where}: AWS has no such version ({code})")
        return code_to_error(code, status, where, deleted=is_deleted_message(exc))
    return _map_transport(exc, where)


def _map_transport(exc: Exception, where: str) -> SourceError:
    from botocore import exceptions as bce
    from botocore.parsers import ResponseParserError

    kind = type(exc).__name__
    if isinstance(exc, bce.ParamValidationError):
        # botocore refused to send it: no secret, version or label can look like that.
        return NotFound(f"{where}: AWS can have no such secret, version or stage")
    if isinstance(exc, bce.ConnectTimeoutError | bce.ReadTimeoutError):
        return BackendTimeout(f"{where}: AWS did not answer in time ({kind})")
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return BackendAuthError(f"{where}: no usable AWS credentials ({kind})")
    if isinstance(exc, ResponseParserError):
        return BadBackendAnswer(f"{where}: AWS's answer could not be parsed")
    if isinstance(exc, bce.BotoCoreError | OSError):
        return BackendUnavailable(f"{where}: cannot reach AWS ({kind})")
    return BackendUnavailable(f"{where}: request failed ({kind})")


def is_outage(exc: BaseException) -> bool:
    """Whether a failure of one call means its region is out: no answer in time,
    no connection, a 5xx. Throttling, a 4xx, a refused or unparsable answer and
    missing credentials are answers (or our problem): another region would not help."""
    if isinstance(exc, TimeoutError):
        return True
    found = error_code(exc)
    if found is not None:
        return not is_throttle(exc) and found[1] >= 500
    from botocore import exceptions as bce

    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return False
    if isinstance(exc, bce.ParamValidationError):
        return False
    return isinstance(exc, bce.BotoCoreError | OSError) or type(exc).__module__.startswith(
        "aiohttp"
    )
