"""[[rotation]] entries (secretd.config.rotation): defaults, per-rotator keys,
errors that name the key path, and durations in days."""

from __future__ import annotations

import pytest

from secretd.config import parse_config
from secretd.config.rotation import CommandRotation, PostgresqlRotation, RandomRotation
from secretd.config.types import parse_duration
from secretd.errors import ConfigError

BASE = '[backends.local]\ntype = "file"\npath = "/tmp/store"\n\n'


def _rotation(body: str) -> str:
    return BASE + '[[rotation]]\nsecret = "db/app"\nevery = "30d"\n' + body


def test_durations_take_days() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("1d12h") == 36 * 3600
    with pytest.raises(ValueError, match="30d"):
        parse_duration("3w")


def test_each_rotator_gets_its_model_and_defaults() -> None:
    config = parse_config(
        _rotation('rotator = "postgresql"\nadmin_secret = "db/admin"\n')
        + '[[rotation]]\nsecret = "api/key"\nrotator = "random"\nevery = "7d"\nfield = "key"\n'
        + '[[rotation]]\nsecret = "api/tok"\nrotator = "command"\nevery = "1h"\n'
        + 'set = ["/usr/local/bin/set-token", "--quiet"]\n'
    )
    pg, rnd, cmd = config.rotation
    assert isinstance(pg, PostgresqlRotation)
    assert pg.roles == ("app_a", "app_b") and pg.grace == 60.0 and pg.every == 30 * 86400
    assert pg.spread == 3600.0  # 5% of 30 days, capped at an hour
    assert isinstance(rnd, RandomRotation) and rnd.field == "key" and rnd.alphabet == "alnum"
    assert isinstance(cmd, CommandRotation) and cmd.test is None and cmd.command_timeout == 30.0
    assert cmd.spread == pytest.approx(180.0)  # 5% of an hour


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('rotator = "random"\nset = ["/bin/true"]\n', "rotation[0].set: unknown key"),
        ('rotator = "postgresql"\n', "rotation[0].admin_secret: required key is missing"),
        (
            'rotator = "postgresql"\nadmin_secret = "db/admin"\nroles = ["a"]\n',
            "rotation[0].roles",
        ),
        (
            'rotator = "postgresql"\nadmin_secret = "db/admin"\nroles = ["app", "Robert\'); --"]\n',
            "rotation[0].roles: expected plain role names",
        ),
        (
            'rotator = "postgresql"\nadmin_secret = "db/admin"\nroles = ["a_1", "a_1"]\n',
            "roles must be different",
        ),
        ('rotator = "postgresql"\nadmin_secret = "db/app"\n', "admin_secret must be another"),
        (
            'rotator = "postgresql"\nadmin_secret = "db/admin"\ngrace = "10m"\ntimeout = "5m"\n',
            "grace must be shorter than timeout",
        ),
        ('rotator = "command"\nset = ["set-token"]\n', "rotation[0].set: the program must be"),
        ('rotator = "random"\nlength = 4\n', "rotation[0].length"),
        ('rotator = "random"\nalphabet = "emoji"\n', "rotation[0].alphabet"),
        (
            'rotator = "shuffle"\n',
            "rotation[0].rotator: expected one of 'random', 'command', 'postgresql'",
        ),
    ],
)
def test_bad_entries_are_refused_naming_the_key(body: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(_rotation(body))
    assert message in raised.value.message


def test_a_bad_duration_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"rotation\[0\]\.every"):
        parse_config(BASE + '[[rotation]]\nsecret = "db/app"\nrotator = "random"\nevery = "soon"\n')


def test_one_entry_per_secret() -> None:
    twice = _rotation('rotator = "random"\n') + (
        '[[rotation]]\nsecret = "db/app"\nrotator = "random"\nevery = "1d"\n'
    )
    with pytest.raises(ConfigError, match="rotate the same secret"):
        parse_config(twice)


def test_state_dir_is_an_agent_key() -> None:
    config = parse_config('[agent]\nstate_dir = "/srv/secretd-state"\n' + BASE)
    assert str(config.agent.state_dir) == "/srv/secretd-state"
