"""Fakes: real, small implementations of our own protocols and of the peers we
talk to (a hostile Vault or AWS endpoint, a dripping agent, systemd's credential
client), for tests. Launchers of real components live in tests/servers/."""
