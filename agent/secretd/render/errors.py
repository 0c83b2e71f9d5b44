"""`TemplateError`: a failed render, with the secret it is about kept apart.

Every render failure the runner records is one. Its text is for the operator
(logs, audit, root's view of `/v1/health`); `secret` lets health show that
text only to a caller allowed to read that secret (others get `cause`, a
fixed code). Neither ever holds a value: names, fields and stages reach a
message only when the template or config wrote them (see render.jinja).
"""

from __future__ import annotations

from secretd.errors import RenderError
from secretd.model import SecretName


class TemplateError(RenderError):
    """A failed render. `secret`: the secret the failure is about, if one;
    `cause`: the code of the underlying error (`not_found`, `backend_unavailable`,
    `render_failed`, ...)."""

    def __init__(
        self, message: str, *, secret: SecretName | None = None, cause: str = "render_failed"
    ) -> None:
        super().__init__(message)
        self.secret = secret
        self.cause = cause
