"""The exception tree of the secretd client.

    SecretdClientError              root: catch this to catch everything below
    ├── AgentUnavailable            cannot connect to the agent, or it hung up
    ├── RequestTimeout              the agent did not answer in time
    ├── ProtocolError               the answer is not the secretd API's shape
    └── ApiError                    the agent answered with an error (.code, .status)
        ├── InvalidName             400 invalid_name (also raised locally, before sending)
        ├── InvalidRequest          400 invalid_request
        ├── Unauthorized            401 missing_token | bad_token
        ├── Forbidden               403 forbidden
        ├── NotFound                404 not_found
        ├── TooLarge                413 too_large
        ├── RateLimited             429 rate_limited
        ├── ServerError             500 (internal, store_error, ...)
        └── BackendUnavailable      503 backend_unavailable
            └── BackendTimeout      504 backend_timeout

Errors marked retryable (`exc.retryable`): AgentUnavailable, RequestTimeout,
ProtocolError, RateLimited, ServerError, BackendUnavailable/Timeout.
Messages name the secret or socket at fault and never contain a secret value.
"""

from __future__ import annotations

__all__ = [
    "AgentUnavailable",
    "ApiError",
    "BackendTimeout",
    "BackendUnavailable",
    "Forbidden",
    "InvalidName",
    "InvalidRequest",
    "NotFound",
    "ProtocolError",
    "RateLimited",
    "RequestTimeout",
    "SecretdClientError",
    "ServerError",
    "TooLarge",
    "Unauthorized",
    "error_for",
]


class SecretdClientError(Exception):
    """Root of every error the client raises on purpose. `retryable` says
    whether asking again later may succeed (a watch retries exactly these)."""

    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class AgentUnavailable(SecretdClientError):
    """The agent's socket does not exist, refuses connections, or the connection broke."""

    retryable = True


class RequestTimeout(SecretdClientError):
    """The agent accepted the request but did not answer within the client's timeout."""

    retryable = True


class ProtocolError(SecretdClientError):
    """The answer was not what the secretd API sends (bad JSON, missing fields)."""

    retryable = True


class ApiError(SecretdClientError):
    """The agent answered with an error body; `code` and `status` say which."""

    default_code = "internal"

    def __init__(self, message: str, *, code: str | None = None, status: int = 0) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.status = status


class InvalidName(ApiError):
    default_code = "invalid_name"


class InvalidRequest(ApiError):
    default_code = "invalid_request"


class Unauthorized(ApiError):
    default_code = "missing_token"


class Forbidden(ApiError):
    default_code = "forbidden"


class NotFound(ApiError):
    default_code = "not_found"


class TooLarge(ApiError):
    default_code = "too_large"


class RateLimited(ApiError):
    retryable = True
    default_code = "rate_limited"


class ServerError(ApiError):
    retryable = True
    default_code = "internal"


class BackendUnavailable(ApiError):
    retryable = True
    default_code = "backend_unavailable"


class BackendTimeout(BackendUnavailable):
    default_code = "backend_timeout"


_BY_CODE: dict[str, type[ApiError]] = {
    "invalid_name": InvalidName,
    "invalid_request": InvalidRequest,
    "missing_token": Unauthorized,
    "bad_token": Unauthorized,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "too_large": TooLarge,
    "rate_limited": RateLimited,
    "backend_unavailable": BackendUnavailable,
    "backend_timeout": BackendTimeout,
}

_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: TooLarge,
    429: RateLimited,
    503: BackendUnavailable,
    504: BackendTimeout,
}


def error_for(status: int, code: str | None, message: str) -> ApiError:
    """The exception for an API error: by `code` when known, else by HTTP status."""
    cls = _BY_CODE.get(code or "")
    if cls is None:
        cls = _BY_STATUS.get(status, ServerError if status >= 500 else InvalidRequest)
    return cls(message, code=code, status=status)
