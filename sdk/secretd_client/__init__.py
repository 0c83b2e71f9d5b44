"""secretd_client: the client for the secretd agent's Unix-socket API.

    from secretd_client import Client

    with Client() as client:                      # $SECRETD_SOCKET or the default socket
        secret = client.get("db/app", field="password")
        connect(password=secret.value)

`AsyncClient` offers the same methods for asyncio. Errors derive from
`SecretdClientError`. `secretd_client.testing.StaticSecrets` serves the API from
a dict for applications' own tests.
"""

from secretd_client._client import AsyncClient, Client
from secretd_client._errors import (
    AgentUnavailable,
    ApiError,
    BackendTimeout,
    BackendUnavailable,
    Forbidden,
    InvalidName,
    InvalidRequest,
    NotFound,
    ProtocolError,
    RateLimited,
    RequestTimeout,
    SecretdClientError,
    ServerError,
    TooLarge,
    Unauthorized,
)
from secretd_client._models import BackendHealth, Health, Secret, SecretInfo, TemplateHealth
from secretd_client._socket import resolve_socket, socket_candidates
from secretd_client._wire import Backoff

__version__ = "0.2.0"

__all__ = [
    "AgentUnavailable",
    "ApiError",
    "AsyncClient",
    "BackendHealth",
    "BackendTimeout",
    "BackendUnavailable",
    "Backoff",
    "Client",
    "Forbidden",
    "Health",
    "InvalidName",
    "InvalidRequest",
    "NotFound",
    "ProtocolError",
    "RateLimited",
    "RequestTimeout",
    "Secret",
    "SecretInfo",
    "SecretdClientError",
    "ServerError",
    "TemplateHealth",
    "TooLarge",
    "Unauthorized",
    "__version__",
    "resolve_socket",
    "socket_candidates",
]
