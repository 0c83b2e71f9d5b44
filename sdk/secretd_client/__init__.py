"""secretd_client: the client for the secretd agent's API (filled in by the agent issue)."""

__all__: list[str] = []
