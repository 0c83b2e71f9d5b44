"""The exception tree. Every error secretd raises on purpose is a SecretdError.

    SecretdError                    500 internal            exit 1
    ├── UsageError                  400 invalid_request     exit 2
    ├── ConfigError                 -                       exit 2
    ├── InvalidName                 400 invalid_name        exit 2
    ├── InvalidRequest              400 invalid_request     exit 2
    ├── AuthError                   401 missing_token       exit 1
    │   └── BadToken                401 bad_token
    ├── Forbidden                   403 forbidden           exit 1
    ├── NotFound                    404 not_found           exit 1
    ├── Conflict                    409 conflict            exit 1  (another writer got there first)
    ├── TooLarge                    413 too_large           exit 1
    ├── RateLimited                 429 rate_limited        exit 1
    ├── StoreError                  500 store_error         exit 1
    │   ├── KeyFileError            (bad key file: mode, length, symlink)
    │   ├── UnknownKeyId
    │   └── IntegrityError          (ciphertext, header or tag failed to verify)
    ├── BackendError                503 backend_unavailable exit 1
    │   ├── BackendUnavailable
    │   ├── BackendTimeout          504 backend_timeout
    │   ├── BackendAuthError
    │   ├── BadBackendAnswer        (malformed, hostile or mismatched answer)
    │   └── BackendNotFound         404 not_found   (the backend says: no such secret/version)
    └── RenderError                 500 render_failed       exit 1

Each class carries its API `code`, HTTP `status` and CLI `exit_code`; only the API's
error middleware and the CLI translate them. Messages name the file, key or secret
at fault and never contain a secret value.
"""

from __future__ import annotations


class SecretdError(Exception):
    """Root of every deliberate secretd error."""

    code: str = "internal"
    status: int = 500
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SecretdError):
    code, status, exit_code = "invalid_request", 400, 2


class ConfigError(SecretdError):
    code, status, exit_code = "config_error", 500, 2


class InvalidName(SecretdError):
    code, status, exit_code = "invalid_name", 400, 2


class InvalidRequest(SecretdError):
    code, status, exit_code = "invalid_request", 400, 2


class AuthError(SecretdError):
    code, status = "missing_token", 401


class BadToken(AuthError):
    code = "bad_token"


class Forbidden(SecretdError):
    code, status = "forbidden", 403


class NotFound(SecretdError):
    code, status = "not_found", 404


class Conflict(SecretdError):
    """A write lost a check-and-set: another writer changed the secret first."""

    code, status = "conflict", 409


class TooLarge(SecretdError):
    code, status = "too_large", 413


class RateLimited(SecretdError):
    code, status = "rate_limited", 429


class StoreError(SecretdError):
    code, status = "store_error", 500


class KeyFileError(StoreError):
    """A key file is missing, too open, a symlink or the wrong length."""


class UnknownKeyId(StoreError):
    """A record names a key id that no loaded key has."""


class IntegrityError(StoreError):
    """Ciphertext, wrapped key or header failed authentication: no plaintext."""


class BackendError(SecretdError):
    code, status = "backend_unavailable", 503


class BackendUnavailable(BackendError):
    pass


class BackendTimeout(BackendError):
    code, status = "backend_timeout", 504


class BackendAuthError(BackendError):
    pass


class BadBackendAnswer(BackendError):
    pass


class BackendNotFound(BackendError):
    code, status = "not_found", 404


class RenderError(SecretdError):
    code, status = "render_failed", 500
