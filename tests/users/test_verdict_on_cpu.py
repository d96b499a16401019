"""ask_verdict: parse, type-check and re-ask; never guess a verdict."""

from __future__ import annotations

import logging

import pytest

from infopo_verl.users.base import SimulatorFailure, UserSimulator
from infopo_verl.users.verdict import ask_verdict

FIELDS = {"persuaded": bool, "score": float, "note": (str, type(None))}
JUDGE = [
    {"role": "system", "content": "Judge the dialogue. Answer with one JSON object: persuaded, score, note."},
    {"role": "user", "content": "Agent: Please donate. User: Fine, I will."},
]


class QueuedUser(UserSimulator):
    """A simulator that returns queued replies and records every chat it was shown."""

    name = "queued"

    def __init__(self, replies: list[str]):
        self.replies = list(replies)
        self.chats: list[list[dict]] = []

    async def reply(self, messages):
        self.chats.append([dict(m) for m in messages])
        return self.replies.pop(0)


async def test_well_formed_verdict():
    user = QueuedUser(['{"persuaded": true, "score": 0.75, "note": null}'])
    assert await ask_verdict(user, JUDGE, fields=FIELDS) == {"persuaded": True, "score": 0.75, "note": None}
    assert user.chats == [JUDGE]


async def test_fenced_verdict_inside_prose_and_integer_for_float():
    reply = 'Here is my verdict:\n```json\n{"persuaded": false, "score": 1, "note": "said {no}"}\n```\nThanks!'
    verdict = await ask_verdict(QueuedUser([reply]), JUDGE, fields=FIELDS)
    assert verdict == {"persuaded": False, "score": 1.0, "note": "said {no}"}
    assert type(verdict["score"]) is float


async def test_malformed_then_fixed_shows_the_bad_reply_and_the_problem():
    bad = "I think they were persuaded."
    user = QueuedUser([bad, '{"persuaded": true, "score": 0.5, "note": "ok"}'])
    verdict = await ask_verdict(user, JUDGE, fields=FIELDS)
    assert verdict["persuaded"] is True
    second_chat = user.chats[1]
    assert second_chat[: len(JUDGE)] == JUDGE
    assert second_chat[len(JUDGE)] == {"role": "assistant", "content": bad}
    correction = second_chat[len(JUDGE) + 1]
    assert correction["role"] == "user"
    assert "no JSON object" in correction["content"] and '"persuaded" (true or false)' in correction["content"]
    assert len(JUDGE) == 2  # the caller's list is not modified


async def test_always_malformed_fails_with_a_capped_reason(caplog):
    caplog.set_level(logging.WARNING)
    rambling = "no verdict here " * 500
    user = QueuedUser([rambling] * 3)
    with pytest.raises(SimulatorFailure) as failure:
        await ask_verdict(user, JUDGE, fields=FIELDS, attempts=3)
    assert failure.value.reason.startswith("malformed verdict after 3 attempts: no JSON object in the reply")
    assert len(failure.value.reason) < 300
    assert len(user.chats) == 3
    assert all(len(record.getMessage()) < 300 for record in caplog.records)


@pytest.mark.parametrize(
    "reply, problem",
    [
        ('{"persuaded": 1, "score": 0.5, "note": null}', "field 'persuaded' must be true or false, got int"),
        ('{"persuaded": true, "score": true, "note": null}', "field 'score' must be a number, got bool"),
        ('{"persuaded": true, "score": "0.5", "note": null}', "field 'score' must be a number, got str"),
        ('{"persuaded": true, "score": NaN, "note": null}', "no JSON object in the reply"),
        ('{"persuaded": true, "note": null}', "field 'score' is missing"),
        ('["persuaded", true]', "no JSON object in the reply"),
    ],
)
async def test_wrong_types_and_missing_fields_are_never_accepted(reply, problem):
    with pytest.raises(SimulatorFailure) as failure:
        await ask_verdict(QueuedUser([reply]), JUDGE, fields=FIELDS, attempts=1)
    assert failure.value.reason.startswith(f"malformed verdict after 1 attempt: {problem}")


async def test_an_integer_field_refuses_a_boolean():
    with pytest.raises(SimulatorFailure, match="field 'passed' must be an integer, got bool"):
        await ask_verdict(QueuedUser(['{"passed": false}']), JUDGE, fields={"passed": int}, attempts=1)


async def test_simulator_failure_passes_through():
    class DownUser(UserSimulator):
        async def reply(self, messages):
            raise SimulatorFailure("openai user simulator: HTTP 500 (4 attempts)")

    with pytest.raises(SimulatorFailure, match="HTTP 500"):
        await ask_verdict(DownUser(), JUDGE, fields=FIELDS)
