"""Session keys: precedence, stability across turns, and nothing in clear."""

from __future__ import annotations

import pytest

from app.errors import InvalidRequestError
from app.sessions.keys import session_key

SYSTEM = {"role": "system", "content": "You are terse."}
FIRST = {"role": "user", "content": "Plan a trip to Lisbon"}


def test_precedence_header_then_body_then_user_then_derived() -> None:
    body = {"messages": [FIRST], "user": "u-1", "pareto": {"session_id": "b-1"}}
    by_header = session_key({"x-pareto-session-id": "h-1"}, body)
    by_body = session_key({}, body)
    by_user = session_key({}, {"messages": [FIRST], "user": "u-1"})
    derived = session_key({}, {"messages": [FIRST]})
    assert by_header is not None and by_header.source == "header"
    assert by_body is not None and by_body.source == "body"
    assert by_user is not None and by_user.source == "user"
    assert derived is not None and derived.source == "derived"
    assert len({by_header.digest, by_body.digest, by_user.digest, derived.digest}) == 4


def test_header_and_body_ids_name_the_same_session() -> None:
    by_header = session_key({"x-pareto-session-id": "chat-42"}, {"messages": [FIRST]})
    by_body = session_key({}, {"messages": [FIRST], "pareto": {"session_id": "chat-42"}})
    assert by_header is not None and by_body is not None
    assert by_header.digest == by_body.digest


def test_user_field_can_be_turned_off() -> None:
    key = session_key({}, {"messages": [FIRST], "user": "u-1"}, use_user_field=False)
    assert key is not None and key.source == "derived"


def test_derived_key_is_stable_across_turns_and_private_per_caller() -> None:
    turn1 = {"messages": [SYSTEM, FIRST]}
    turn3 = {
        "messages": [
            SYSTEM,
            FIRST,
            {"role": "assistant", "content": "Sure."},
            {"role": "user", "content": "In May"},
        ]
    }
    alice = {"authorization": "Bearer alice-key"}
    k1, k3 = session_key(alice, turn1), session_key(alice, turn3)
    other_caller = session_key({"authorization": "Bearer bob-key"}, turn1)
    other_system = session_key(alice, {"messages": [{"role": "system", "content": "x"}, FIRST]})
    assert k1 is not None and k3 is not None and other_caller is not None
    assert other_system is not None
    assert k1.digest == k3.digest
    assert other_caller.digest != k1.digest
    assert other_system.digest != k1.digest


def test_key_is_a_hash_without_the_id_key_or_prompt_in_it() -> None:
    key = session_key({"authorization": "Bearer sk-secret"}, {"messages": [FIRST]})
    assert key is not None
    assert len(key.digest) == 32 and int(key.digest, 16) >= 0
    for secret in ("sk-secret", "Lisbon", "trip"):
        assert secret not in key.digest


def test_no_user_message_means_no_key() -> None:
    assert session_key({}, {"messages": [SYSTEM]}) is None


@pytest.mark.parametrize("bad", ["", "   ", 7, "x" * 300])
def test_malformed_session_id_is_a_400_naming_the_field(bad: object) -> None:
    with pytest.raises(InvalidRequestError) as info:
        session_key({}, {"messages": [FIRST], "pareto": {"session_id": bad}})
    assert info.value.param == "pareto.session_id"
