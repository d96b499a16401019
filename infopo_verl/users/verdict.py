"""Structured verdicts from a user simulator, for the parts of a task an LLM judges (e.g. "was the user persuaded").

The caller's prompt asks for one JSON object with named fields. The reply is untrusted text: we take the first
JSON object in it (a ```json fence or prose around it is tolerated), check that every required field is there
with the required type, and otherwise show the model its reply and what was wrong, and ask again. After
``attempts`` replies without a valid verdict we raise :class:`SimulatorFailure`: a missing verdict is never
replaced by a guessed one, because a guessed verdict would become a reward.

Type rules: JSON has one number type, so an integer passes where ``float`` is asked (and is returned as a float);
a boolean never passes as a number, nor a number as a boolean; NaN and Infinity are refused.
"""

from __future__ import annotations

import json
import logging
import reprlib
from collections.abc import Mapping

from infopo_verl.users.base import ChatMessage, SimulatorFailure, UserSimulator

__all__ = ["ask_verdict"]

logger = logging.getLogger(__name__)

FieldTypes = Mapping[str, type | tuple[type, ...]]

# Reply text is untrusted and may be long: reasons and log lines quote at most this much of it.
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = 120

_JSON_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
               dict: "a JSON object", type(None): "null"}


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid verdict value")


_decoder = json.JSONDecoder(parse_constant=_refuse_constant)


def _first_json_object(text: str) -> dict | None:
    """The first ``{...}`` in ``text`` that parses as a JSON object, or None."""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = _decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def _describe(expected: tuple[type, ...]) -> str:
    return " or ".join(_JSON_NAMES.get(t, t.__name__) for t in expected)


def _check(verdict: dict, fields: FieldTypes) -> tuple[dict, str | None]:
    """Return (verdict with floats normalised, None) or (verdict, the first problem found)."""
    checked = dict(verdict)
    for name, expected in fields.items():
        expected = expected if isinstance(expected, tuple) else (expected,)
        if name not in verdict:
            return checked, f"field {name!r} is missing"
        value = verdict[name]
        is_number_for_float = float in expected and type(value) is int  # JSON writes 1.0 as 1
        if isinstance(value, bool) and bool not in expected:
            ok = False
        elif is_number_for_float:
            ok = True
            checked[name] = float(value)
        else:
            ok = isinstance(value, expected)
        if not ok:
            return checked, f"field {name!r} must be {_describe(expected)}, got {type(value).__name__}"
    return checked, None


def _parse(reply: str, fields: FieldTypes) -> tuple[dict | None, str]:
    verdict = _first_json_object(reply)
    if verdict is None:
        return None, "no JSON object in the reply"
    checked, problem = _check(verdict, fields)
    return (checked, "") if problem is None else (None, problem)


def _correction(problem: str, fields: FieldTypes) -> str:
    wanted = ", ".join(
        f'"{name}" ({_describe(expected if isinstance(expected, tuple) else (expected,))})'
        for name, expected in fields.items()
    )
    return (
        f"Your previous reply is not a valid verdict: {problem}. Reply again with exactly one JSON object "
        f"with the fields {wanted}."
    )


async def ask_verdict(
    user: UserSimulator,
    messages: list[ChatMessage],
    *,
    fields: FieldTypes,
    attempts: int = 3,
) -> dict:
    """Ask ``user`` for a JSON verdict with ``fields`` (name -> type or tuple of types); return the parsed object.

    Raises SimulatorFailure("malformed verdict after N attempts: ...") when no reply holds a valid verdict, and
    lets the simulator's own SimulatorFailure through.
    """
    if attempts < 1:
        raise ValueError(f"ask_verdict needs attempts >= 1 (got {attempts})")
    if not fields:
        raise ValueError("ask_verdict needs at least one required field: a verdict with no fields checks nothing")
    chat = list(messages)
    problem, reply = "", ""
    for attempt in range(1, attempts + 1):
        reply = await user.reply(chat)
        verdict, problem = _parse(reply, fields)
        if verdict is not None:
            return verdict
        logger.warning("malformed verdict (attempt %d/%d): %s; reply %s", attempt, attempts, problem, _QUOTE.repr(reply))
        chat = chat + [{"role": "assistant", "content": reply}, {"role": "user", "content": _correction(problem, fields)}]
    raise SimulatorFailure(
        f"malformed verdict after {attempts} attempt{'s' if attempts != 1 else ''}: {problem} "
        f"(last reply {_QUOTE.repr(reply)})"
    )
