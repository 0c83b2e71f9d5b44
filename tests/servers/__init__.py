"""Real components the tests start and stop: `bao server -dev`, `moto_server`,
PostgreSQL, the `secretd agent` itself, a second local user. Fakes (real
implementations of our own protocols) live in tests/fakes/."""
