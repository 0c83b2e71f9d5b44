"""The exception tree. Every error secretd raises on purpose is a SecretdError.

    SecretdError                    code
    ├── UsageError                  invalid_request   (a command line that cannot work)
    ├── ConfigError                 config_error      (names the file and key at fault)
    ├── InvalidName                 invalid_name      (docs/reference/http-api.md, names)
    ├── InvalidRequest              invalid_request
    ├── AuthError                   missing_token     (TCP)
    │   └── BadToken                bad_token
    ├── Forbidden                   forbidden         (no [[allow]] rule; decided first)
    ├── NotFound                    not_found         (no such secret, version or stage:
    │                                                  said by a backend, or no backend)
    ├── TooLarge                    too_large
    ├── RateLimited                 rate_limited
    ├── Conflict                    conflict          (someone else is changing it)
    ├── StoreError                  store_error
    │   ├── KeyFileError            (bad key file: mode, length, symlink)
    │   ├── UnknownKeyId
    │   └── IntegrityError          (ciphertext, header or tag failed to verify)
    ├── BackendError                backend_unavailable   (the cache keeps its last good value)
    │   ├── BackendUnavailable
    │   ├── BackendTimeout          backend_timeout
    │   ├── BackendAuthError
    │   └── BadBackendAnswer        (malformed, hostile or mismatched answer)
    └── RenderError                 render_failed

"Not found" is an answer, not a failure: it is a sibling of `BackendError`, so
code that handles a failing backend never mistakes an absent secret for one.
A backend answers with a value, `NotFound`, or a `BackendError`
(`SourceError`).

Each class carries a stable `code` (API bodies, audit results, metrics). What
an error means to a caller is decided where it is translated, and only there:
HTTP statuses in api/errors.py, exit codes in cli/main.py. Messages name the
file, key or secret at fault and never contain a secret value.
"""

from __future__ import annotations


class SecretdError(Exception):
    """Root of every deliberate secretd error."""

    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(SecretdError):
    code = "invalid_request"


class ConfigError(SecretdError):
    code = "config_error"


class InvalidName(SecretdError):
    code = "invalid_name"


class InvalidRequest(SecretdError):
    code = "invalid_request"


class AuthError(SecretdError):
    code = "missing_token"


class BadToken(AuthError):
    code = "bad_token"


class Forbidden(SecretdError):
    code = "forbidden"


class NotFound(SecretdError):
    code = "not_found"


class Conflict(SecretdError):
    """A write lost a check-and-set: another writer changed the secret first."""

    code, status = "conflict", 409


class TooLarge(SecretdError):
    code = "too_large"


class RateLimited(SecretdError):
    code = "rate_limited"


class StoreError(SecretdError):
    code = "store_error"


class KeyFileError(StoreError):
    """A key file is missing, too open, a symlink or the wrong length."""


class UnknownKeyId(StoreError):
    """A record names a key id that no loaded key has."""


class IntegrityError(StoreError):
    """Ciphertext, wrapped key or header failed authentication: no plaintext."""


class BackendError(SecretdError):
    code = "backend_unavailable"


class BackendUnavailable(BackendError):
    pass


class BackendTimeout(BackendError):
    code = "backend_timeout"


class BackendAuthError(BackendError):
    pass


class BadBackendAnswer(BackendError):
    pass


class RenderError(SecretdError):
    code = "render_failed"


# What a backend may answer instead of a value, for annotations and `except`.
SourceError = BackendError | NotFound
SOURCE_ERRORS = (BackendError, NotFound)
