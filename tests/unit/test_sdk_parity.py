"""`secretd_client.testing.StaticSecrets` answers like the agent: the same
name rule and the same field selection (docs/reference/http-api.md), checked against the agent's
own `secretd.model` with generated inputs."""

from __future__ import annotations

import json
from typing import Any

import httpx
from hypothesis import given
from hypothesis import strategies as st

from secretd.errors import InvalidRequest
from secretd.model import SecretValue, name_problem
from secretd_client import InvalidName
from secretd_client._wire import check_name
from secretd_client.testing import StaticSecrets

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.text(max_size=10),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(st.text(max_size=30))
def test_the_sdk_accepts_exactly_the_names_the_agent_accepts(name: str) -> None:
    agent_says_ok = name_problem(name) is None
    try:
        check_name(name)
        sdk_says_ok = True
    except InvalidName:
        sdk_says_ok = False
    assert sdk_says_ok == agent_says_ok


@given(
    st.dictionaries(st.text(min_size=1, max_size=5), json_value, max_size=4),
    st.text(min_size=1, max_size=5),
)
def test_fields_select_like_the_agent(obj: dict[str, Any], field: str) -> None:
    raw = json.dumps(obj, ensure_ascii=False)
    secrets = StaticSecrets({"app/x": raw})
    response = secrets.answer(
        httpx.Request("GET", "http://s/v1/secrets/app/x", params={"field": field})
    )
    try:
        expected = SecretValue(raw.encode()).field(field).reveal()
    except InvalidRequest:
        assert response.status_code == 400
        return
    assert response.status_code == 200
    body = response.json()
    got = body["value"].encode() if "value" in body else None
    assert got == expected
