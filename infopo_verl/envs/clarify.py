"""The built-in ``clarify`` task: ask a vague requester for the missing details, then answer.

Each task is a vague request ("Book a table for me.") hiding 2-4 slots (cuisine, day, time, ...), each with a value
drawn from a small vocabulary. The system prompt names the slots the final answer needs, but not their values; the
only way to get the values is to ask. A scripted user answers exactly what is asked:

- a question naming a slot (its name or one of its keywords, whole words, case-insensitive) gets that slot's value,
  ``"The cuisine is thai."``; a question naming several slots gets all of them, in the task's slot order;
- a question naming no known slot gets ``"I don't know."``;
- in the *uninformative* variant (``algorithm.infopo.env.uninformative=true`` or the row's
  ``extra_info.infopo.uninformative``) every question gets ``"I don't know."``: the same dialogues with feedback
  that carries no information, so the measured information gain r_t must come out smaller;
- with ``algorithm.infopo.user.backend`` set to ``openai`` or ``policy``, that model plays the requester instead,
  prompted with the hidden details (:func:`simulator_prompt`).

The final answer is one line ``ANSWER: cuisine = thai; day = friday`` (see :func:`parse_answer`; ``,`` also
separates pairs, spaces around ``=`` are optional and a trailing ``.`` is tolerated, keys and values are compared case-insensitively). It
ends the dialogue. The outcome (``final_score``) is the share of hidden slots answered right, in [0, 1]; a missing
or unparseable answer scores 0 and the reason is recorded in ``StepResult.info["answer_error"]``.

Everything is generated from code by :func:`generate_rows` (seeded, deterministic), so the task needs no data files,
no network and no model: it is the task of the CPU tests and demos. Departure from the paper: none of the paper's
benchmarks; this task exists so that information gain has an exact, checkable meaning (a reply either contains a
slot value or it does not).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Mapping
from typing import Any

from infopo_verl.envs.base import Action, Environment, StepResult
from infopo_verl.envs.registry import task_fields
from infopo_verl.users.base import UserSimulator

__all__ = [
    "ClarifyEnv",
    "SLOTS",
    "TEMPLATES",
    "DONT_KNOW",
    "ANSWER_MARKER",
    "DATA_SOURCE",
    "AGENT_NAME",
    "generate_rows",
    "parse_answer",
    "format_answer",
    "slot_reply",
    "system_prompt",
    "simulator_prompt",
]

DATA_SOURCE = "infopo_clarify"
AGENT_NAME = "infopo_user"
"""The agent loop the rows select through the ``agent_name`` column (SPEC section 2)."""
DONT_KNOW = "I don't know."
"""The scripted user's reply to a question that names no slot (and to every question when uninformative)."""
ANSWER_MARKER = "ANSWER:"


@dataclasses.dataclass(frozen=True)
class Slot:
    """One kind of hidden detail: how the user names it, which words in a question ask for it, its values."""

    name: str
    """Key in the final answer and in ``extra_info.infopo.slots``; a single lowercase word."""
    keywords: tuple[str, ...]
    """Whole words (besides ``name``) that make a question ask for this slot; plural ``s`` is accepted."""
    values: tuple[str, ...]
    """Vocabulary the hidden value is drawn from; single lowercase words, so answers parse unambiguously."""
    phrase: str
    """How the user says it, ``{value}`` filled in. Always ``... <name> is <value>.`` so copying is learnable."""


_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIMES = ("9am", "11am", "noon", "2pm", "6pm", "7pm", "8pm")

SLOTS: dict[str, Slot] = {
    slot.name: slot
    for slot in (
        Slot("cuisine", ("food", "eat"), ("thai", "italian", "mexican", "indian", "japanese", "french"),
             "The cuisine is {value}."),
        Slot("day", ("weekday", "date"), _DAYS, "The day is {value}."),
        Slot("time", ("hour", "clock"), _TIMES, "The time is {value}."),
        Slot("guests", ("people", "party", "persons"), ("two", "three", "four", "five", "six"),
             "The number of guests is {value}."),
        Slot("city", ("destination", "where"), ("paris", "rome", "tokyo", "lisbon", "cairo", "lima"),
             "The city is {value}."),
        Slot("month", ("months",), ("march", "april", "may", "june", "july", "august"), "The month is {value}."),
        Slot("budget", ("spend", "money", "cost", "price"), ("low", "medium", "high"), "The budget is {value}."),
        Slot("transport", ("transportation", "vehicle"), ("train", "plane", "car", "bus"),
             "The transport is {value}."),
        Slot("flower", ("flowers", "bouquet"), ("roses", "tulips", "lilies", "daisies"), "The flower is {value}."),
        Slot("color", ("colour", "colors"), ("red", "white", "yellow", "pink"), "The color is {value}."),
        Slot("size", ("big", "large", "small"), ("small", "medium", "large"), "The size is {value}."),
        Slot("room", ("rooms", "place"), ("alpha", "beta", "gamma", "delta"), "The room is {value}."),
        Slot("topic", ("subject", "agenda"), ("budget", "hiring", "roadmap", "sales"), "The topic is {value}."),
    )
}


@dataclasses.dataclass(frozen=True)
class Template:
    """A task kind: the vague requests that open it and the slots it may hide (a 2-4 subset, in this order)."""

    name: str
    requests: tuple[str, ...]
    slots: tuple[str, ...]


TEMPLATES: dict[str, Template] = {
    template.name: template
    for template in (
        Template("restaurant", ("Book a table for me.", "I want to eat out."), ("cuisine", "day", "time", "guests")),
        Template("trip", ("Plan a trip for me.", "I need a vacation."), ("city", "month", "budget", "transport")),
        Template("flowers", ("Send some flowers for me.", "Order a bouquet."), ("flower", "color", "size", "day")),
        Template("meeting", ("Set up a meeting for me.", "Schedule a meeting."), ("day", "time", "room", "topic")),
    )
}


def system_prompt(slot_names: list[str]) -> str:
    """The task instructions: what to do, which fields the answer needs, and the exact answer format."""
    fields = ", ".join(slot_names)
    example = "; ".join(f"{name} = <value>" for name in slot_names)
    return (
        "You help a user with a vague request. Some details are missing. "
        "Ask the user short questions to find them out. "
        f"The details you need are: {fields}. "
        f"When you know them, reply with one line: {ANSWER_MARKER} {example}"
    )


def simulator_prompt(request: str, slots: Mapping[str, str]) -> str:
    """System prompt for an LLM playing the requester: the hidden details, and to reveal only what is asked."""
    details = "; ".join(f"{name} = {value}" for name, value in slots.items())
    return (
        f"You are a person who asked an assistant: \"{request}\" Your request is missing details that only you "
        f"know: {details}. The assistant will ask you questions. Answer each in one short sentence, giving only the "
        "details it asks about, in the form 'The <detail> is <value>.'. If it asks about something else, reply "
        f"\"{DONT_KNOW}\" Never volunteer a detail that was not asked for."
    )


def slot_reply(name: str, value: str) -> str:
    """The scripted user's sentence giving one slot's value (``"The cuisine is thai."``)."""
    slot = SLOTS.get(name)
    return slot.phrase.format(value=value) if slot is not None else f"The {name} is {value}."


def format_answer(slots: Mapping[str, str]) -> str:
    """The canonical final answer for ``slots``: ``ANSWER: cuisine = thai; day = friday``.

    Spaces around ``=`` make each value the same token as in the user's reply (`` thai``), so a small model can
    copy it; :func:`parse_answer` reads the unspaced form too.
    """
    return f"{ANSWER_MARKER} " + "; ".join(f"{name} = {value}" for name, value in slots.items())


def parse_answer(text: str) -> dict[str, str]:
    """Parse the final answer in ``text`` into ``{slot: value}`` (lowercased).

    The answer is what follows the first ``ANSWER:`` (case-insensitive) up to the end of that line; when ``text``
    has no marker the whole first non-empty line is parsed (a tool-call ``answer`` action carries just the pairs).
    Pairs are ``key=value`` separated by ``;`` or ``,``. Raises ``ValueError`` with the reason when the answer is
    empty, a pair has no ``=``, a key or value is empty, or one key is given two different values.
    """
    match = re.search(re.escape(ANSWER_MARKER), text, flags=re.IGNORECASE)
    body = text[match.end():] if match else text.strip()
    body = body.strip().splitlines()[0] if body.strip() else ""
    pairs = [part.strip() for part in re.split(r"[;,]", body) if part.strip()]
    if not pairs:
        raise ValueError(f"the answer has no key=value pairs (expected e.g. '{ANSWER_MARKER} cuisine=thai; day=friday')")
    answer: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"answer part {pair!r} is not key=value")
        key, value = (piece.strip().lower() for piece in pair.split("=", 1))
        value = value.rstrip(".").strip()
        if not key or not value:
            raise ValueError(f"answer part {pair!r} has an empty key or value")
        if key in answer and answer[key] != value:
            raise ValueError(f"answer gives slot {key!r} two values ({answer[key]!r} and {value!r})")
        answer[key] = value
    return answer


def _asked_slots(question: str, slot_names: list[str]) -> list[str]:
    """The slots (in task order) whose name or keyword occurs in ``question`` as a whole word."""
    words = set(re.findall(r"[a-z0-9']+", question.lower()))
    asked = []
    for name in slot_names:
        slot = SLOTS.get(name)
        keywords = {name, *(slot.keywords if slot is not None else ())}
        if any(keyword in words or f"{keyword}s" in words for keyword in keywords):
            asked.append(name)
    return asked


def _decode_slots(value: Any, field: str) -> dict[str, str]:
    """Validate a slots mapping (a dict or its JSON text, as parquet stores it) into ``{name: value}``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise ValueError(f"{field} is not valid JSON ({error}); expected e.g. '{{\"cuisine\": \"thai\"}}'") from None
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"{field} must be a non-empty mapping of slot name -> value, got {value!r}")
    slots = {}
    for name, slot_value in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"{field} has a bad slot name {name!r}: use one lowercase word")
        if not isinstance(slot_value, str) or not slot_value.strip() or re.search(r"[;,=\n]", slot_value):
            raise ValueError(f"{field}.{name} must be non-empty text without ';', ',', '=' or newlines, got {slot_value!r}")
        slots[name] = slot_value.strip().lower()
    return slots


class ClarifyEnv(Environment):
    """One clarify dialogue: answers questions from the hidden slots and scores the final answer.

    With the ``scripted`` backend (``user is None``) the rules of :meth:`reply` play the user, so the information
    in each reply is exactly known. With a configured simulator (``openai`` / ``policy``) the simulator plays the
    requester from :func:`simulator_prompt`, which holds the hidden details and asks it to reveal only what is
    asked; a failing simulator raises :class:`~infopo_verl.users.base.SimulatorFailure` (the rollout records it).
    The uninformative variant never consults anyone.
    """

    family = "clarify"

    def __init__(
        self, slots: Mapping[str, str], request: str = "", uninformative: bool = False, user: UserSimulator | None = None
    ):
        self.slots = dict(slots)
        self.request = request
        self.uninformative = uninformative
        self.user = user
        self.simulator_chat: list[dict[str, str]] = [{"role": "system", "content": simulator_prompt(request, slots)}]
        self.answer: dict[str, str] | None = None
        self.answer_error: str | None = None
        self.done = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any], user: UserSimulator | None, options: Mapping[str, Any]) -> ClarifyEnv:
        """Build from a row written by :func:`generate_rows` (``row["extra_info"]["infopo"]``).

        ``options`` is ``algorithm.infopo.env`` (shared by every task family: keys other than ``uninformative`` are
        left to the other families). Raises ``ValueError`` naming the missing or bad field.
        """
        if not isinstance(row, Mapping):
            raise ValueError(f"clarify row must be a mapping of dataset columns, got {type(row).__name__}")
        task = task_fields(row.get("extra_info"))
        if task.get("env") != cls.family:
            raise ValueError(f"extra_info.infopo.env is {task.get('env')!r}, expected {cls.family!r}")
        if "slots" not in task:
            raise ValueError("extra_info.infopo.slots is missing: a clarify row needs its hidden slots")
        slots = _decode_slots(task["slots"], "extra_info.infopo.slots")
        request = task.get("request", "")
        if not isinstance(request, str):
            raise ValueError(f"extra_info.infopo.request must be text, got {request!r}")
        uninformative = _flag(task.get("uninformative"), "extra_info.infopo.uninformative")
        uninformative = _flag((options or {}).get("uninformative"), "algorithm.infopo.env.uninformative") or uninformative
        return cls(slots, request=request, uninformative=uninformative, user=user)

    def reply(self, question: str) -> str:
        """The scripted user's answer to one question (no state change)."""
        if self.uninformative:
            return DONT_KNOW
        asked = _asked_slots(question, list(self.slots))
        if not asked:
            return DONT_KNOW
        return " ".join(slot_reply(name, self.slots[name]) for name in asked)

    async def step(self, action: Action) -> StepResult:
        if self.done:
            return StepResult(feedback="", done=True, info={"error": "the dialogue already ended with an answer"})
        if action.parse_error is not None and not action.content.strip():
            # The agent tried a tool call we could not read: tell it, the dialogue goes on.
            return StepResult(feedback=f"Your message could not be read: {action.parse_error}", done=False,
                              info={"parse_error": action.parse_error}, env_error=True)
        text = action.content
        if action.choice == "answer" or ANSWER_MARKER.lower() in text.lower():
            return self._finish(text)
        asked = [] if self.uninformative else _asked_slots(text, list(self.slots))
        if self.user is None or self.uninformative:
            return StepResult(feedback=self.reply(text), done=False, info={"asked_slots": asked})
        # The simulator sees the dialogue from the requester's side: the agent's questions are its "user" turns.
        self.simulator_chat.append({"role": "user", "content": text})
        answer = (await self.user.reply(list(self.simulator_chat))).strip()
        self.simulator_chat.append({"role": "assistant", "content": answer})
        return StepResult(feedback=answer, done=False, info={"asked_slots": asked, "simulated": True})

    def _finish(self, text: str) -> StepResult:
        self.done = True
        try:
            self.answer = parse_answer(text)
        except ValueError as error:
            self.answer_error = str(error)
            return StepResult(feedback="", done=True, info={"answer_error": self.answer_error, "score": 0.0})
        correct = [name for name, value in self.slots.items() if self.answer.get(name) == value]
        unknown = sorted(set(self.answer) - set(self.slots))
        return StepResult(
            feedback="",
            done=True,
            info={"answer": dict(self.answer), "correct_slots": correct, "unknown_slots": unknown,
                  "score": self._score()},
        )

    def _score(self) -> float:
        if self.answer is None:
            return 0.0
        return sum(self.answer.get(name) == value for name, value in self.slots.items()) / len(self.slots)

    async def final_score(self) -> float:
        """Share of hidden slots answered right, in [0, 1]; 0 without a (parseable) answer."""
        return self._score()


def _flag(value: Any, field: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"{field} must be true or false, got {value!r}")
    return value


def generate_rows(n: int, seed: int, split: str, *, uninformative: bool = False) -> list[dict[str, Any]]:
    """``n`` clarify tasks as rows of verl's RLHFDataset format, deterministic in ``(seed, split)``.

    Nested fields whose keys vary between rows (the slots) are JSON text, so every row has the same parquet
    schema; :meth:`ClarifyEnv.from_row` decodes them. ``reward_model.ground_truth`` holds the same JSON.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    rng = random.Random(f"infopo-clarify:{split}:{seed}")  # str seeds are hashed deterministically (sha512)
    template_names = sorted(TEMPLATES)
    rows = []
    for index in range(n):
        template = TEMPLATES[rng.choice(template_names)]
        count = rng.randint(2, len(template.slots))
        chosen = set(rng.sample(template.slots, count))
        names = [name for name in template.slots if name in chosen]  # keep the template's slot order
        slots = {name: rng.choice(SLOTS[name].values) for name in names}
        request = rng.choice(template.requests)
        slots_json = json.dumps(slots)
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [
                    {"role": "system", "content": system_prompt(names)},
                    {"role": "user", "content": request},
                ],
                "ability": "clarify",
                "reward_model": {"style": "rule", "ground_truth": slots_json},
                "agent_name": AGENT_NAME,
                "extra_info": {
                    "index": index,
                    "split": split,
                    "infopo": {
                        "env": ClarifyEnv.family,
                        "task": template.name,
                        "slots": slots_json,
                        "request": request,
                        "uninformative": uninformative,
                    },
                },
            }
        )
    return rows
