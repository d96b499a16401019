"""TravelGym: elicit a traveller's preferences, search a database, recommend one option per travel aspect.

The task database (TravelGym's ``travelgym_data_<NN>.json`` files from UserBench / UserRL, JSON objects keyed by
task id) is not shipped in ``../shared``: the environment reads it from ``algorithm.infopo.env.travel_db_path``
(a directory holding those files, or one such file) and stops with a clear error when the key is unset or the
path does not exist. A task record has ``scenario``, ``dimensions`` (its aspects: flight, hotel, apartment,
rental_car, restaurant), ``preferences[aspect]`` (``preferences``: rows ``[aspect, subcategory, preference,
implicit_elicitation, ...]``, ``correct_ids``, ``best_id``), ``arguments[aspect]`` (the right search arguments) and
``all_options[aspect]`` (the options a right search returns).

Rules and scoring (facts from UserRL's TravelGym environment and its training configuration at cf55a30,
``one_choice_per_aspect=True``, ``preference_correct_reward=0.8``, ``search_correct_reward=0.0``):

- ``search``: the simulator judges which aspect the query correctly asks for (given the right arguments); the first
  right search of an aspect returns all its options and pays ``travel_search_reward`` (0.0); a repeat or a wrong
  query pays 0.
- ``action``: the simulator classifies the message: it asks for one of the traveller's still-hidden preferences
  (reward ``travel_preference_reward`` = 0.8; the traveller then reveals it, implicitly), it asks about a
  preference the traveller does not have, it is too vague, or it is other conversation (reward 0).
- ``answer``: one option id (``F12``, ``H3``, ...; the letter is the aspect), at most one per aspect: the aspect's
  best option pays 1.0, another acceptable option 0.8, anything else 0. The dialogue ends when every aspect has an
  answer.
- Score: sum of step rewards.

Departures (ours): UserRL's user also volunteers a random hidden preference after several off-topic turns and
simulates a search outage every few searches; neither is reproduced. Prompts are ours.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infopo_verl.envs.userrl.common import (
    Handled, UserRLEnvironment, canonical, checked_verdict, load_task, one_of, quote, require_field, require_user,
)
from infopo_verl.users.base import SimulatorFailure, UserSimulator

__all__ = ["TravelEnv", "DB_KEY", "load_travel_db", "ASPECT_BY_INITIAL"]

DB_KEY = "algorithm.infopo.env.travel_db_path"
ASPECT_BY_INITIAL = {"F": "flight", "A": "apartment", "C": "rental_car", "H": "hotel", "R": "restaurant"}
BEST_REWARD = 1.0
"""UserRL ``choice_best_reward``."""
CORRECT_REWARD = 0.8
"""UserRL ``choice_correct_reward`` (its evaluation counts 0.8 as a correct choice)."""
PREFERENCE_REWARD = 0.8
"""UserRL training ``preference_correct_reward``; override with ``algorithm.infopo.env.travel_preference_reward``."""
SEARCH_REWARD = 0.0
"""UserRL training ``search_correct_reward``; override with ``algorithm.infopo.env.travel_search_reward``."""

_OPTION_ID = re.compile(r"[ACFHR]\d+")
_KINDS = ("preference", "not_mine", "vague", "other")

_db_cache: dict[Path, dict[str, dict]] = {}
_db_lock = threading.Lock()


def load_travel_db(path: str | Path) -> dict[str, dict]:
    """Task id -> task record from ``path`` (a ``travelgym_data_*.json`` file or a directory of them); cached."""
    path = Path(path).expanduser()
    with _db_lock:
        if path in _db_cache:
            return _db_cache[path]
        if not path.exists():
            raise ValueError(f"{DB_KEY}={str(path)!r} does not exist; point it at TravelGym's data directory "
                             f"(the travelgym_data_<NN>.json files of UserBench / UserRL)")
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        if not files:
            raise ValueError(f"{DB_KEY}={str(path)!r} holds no .json files (expected travelgym_data_<NN>.json)")
        tasks: dict[str, dict] = {}
        for file in files:
            try:
                content = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as error:
                raise ValueError(f"{file}: not a readable JSON file ({error})") from None
            if not isinstance(content, dict):
                raise ValueError(f"{file}: expected a JSON object of task id -> task, got {type(content).__name__}")
            for task_id, task in content.items():
                if isinstance(task, dict):
                    tasks[str(task.get("id", task_id))] = task
        _db_cache[path] = tasks
        return tasks


_SEARCH_SYSTEM = (
    "You check a travel agent's database query. Each travel aspect below comes with the search arguments that are "
    "right for this traveller. Decide which single aspect the query correctly asks for: it must target that aspect "
    "with arguments that match the right ones and must not mix several aspects. If none fits, say none.\n"
    'Reply with exactly one JSON object: {"aspect": "<aspect name or none>"}.'
)
_CLASSIFY_SYSTEM = (
    "You play a traveller talking with a travel agent. You have hidden preferences (listed with ids). Classify the "
    "agent's latest message: 'preference' if it explicitly and specifically asks about one of your listed "
    "preferences (give its id), 'not_mine' if it asks specifically about a preference you do not have in the list, "
    "'vague' if it is too general to answer with a preference, 'other' for any other conversation.\n"
    'Reply with exactly one JSON object: {"kind": "preference" | "not_mine" | "vague" | "other", '
    '"preference_id": "<id or empty>"}.'
)
_REVEAL_SYSTEM = (
    "You play a traveller talking with a travel agent. The agent just asked about one of your preferences. Answer "
    "in one or two natural sentences that convey the preference indirectly, the way a real traveller would hint at "
    "it, following the hint given. Do not list other preferences."
)
_CHAT_SYSTEM = (
    "You play a traveller talking with a travel agent about your trip. Reply to the agent's latest message in one "
    "or two natural sentences, without revealing preferences you were not asked about."
)
_NOT_MINE = ("Good question, but I have no particular preference on that (or I already told you). Ask me about "
             "other specific aspects of what I want.")
_VAGUE = ("That is too general for me to answer. Please ask about a specific, concrete aspect of what I prefer.")


class TravelEnv(UserRLEnvironment):
    family = "travel"
    choices = ("search", "action", "answer")

    def __init__(self, record: dict[str, Any], user: UserSimulator, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        options = options or {}
        self.preference_reward = _number(options, "travel_preference_reward", PREFERENCE_REWARD)
        self.search_reward = _number(options, "travel_search_reward", SEARCH_REWARD)
        self.user = user
        self.scenario = str(record.get("scenario", ""))
        self.aspects: list[str] = list(record["dimensions"])
        self.arguments: dict[str, Any] = record.get("arguments", {})
        self.all_options: dict[str, list] = record.get("all_options", {})
        self.unsearched = list(self.aspects)
        self.best: dict[str, str] = {}
        self.correct: dict[str, set[str]] = {}
        self.preferences: list[dict[str, str]] = []
        for aspect in self.aspects:
            data = record["preferences"][aspect]
            self.best[aspect] = str(data["best_id"])
            self.correct[aspect] = {str(option) for option in data.get("correct_ids", [])}
            for row in data.get("preferences", []):
                self.preferences.append({"id": f"P{len(self.preferences) + 1}", "aspect": str(row[0]),
                                         "preference": str(row[2]), "hint": str(row[3])})
        self.answered: dict[str, str] = {}
        self.history: list[tuple[str, str]] = []

    @classmethod
    def from_row(cls, row: Mapping[str, Any], user: UserSimulator | None, options: Mapping[str, Any]) -> TravelEnv:
        task = load_task(row, cls.family)
        task_id = require_field(task, "id", str, cls.family)
        user = require_user(user, cls.family, "it plays the traveller and judges searches")
        db_path = (options or {}).get("travel_db_path")
        if not db_path:
            raise ValueError(
                f"travel task {task_id!r} needs TravelGym's task database, which is not part of the UserRL data in "
                f"this project: set {DB_KEY} to the directory holding travelgym_data_<NN>.json (UserBench's "
                f"travelgym/data), e.g. +{DB_KEY}=/path/to/travelgym/data"
            )
        record = load_travel_db(db_path).get(task_id)
        if record is None:
            raise ValueError(f"travel task {task_id!r} (extra_info.infopo.task.id) is not in the database at "
                             f"{DB_KEY}={str(db_path)!r}")
        try:
            for aspect in record["dimensions"]:
                record["preferences"][aspect]["best_id"]
        except (KeyError, TypeError) as error:
            raise ValueError(f"travel task {task_id!r} in {DB_KEY}: record lacks {error} "
                             f"(dimensions / preferences.<aspect>.best_id)") from None
        return cls(record, user, options)

    async def handle(self, choice: str, content: str) -> Handled:
        if choice == "search":
            return await self._search(content)
        if choice == "action":
            return await self._talk(content)
        return self._answer(content)

    async def _search(self, query: str) -> Handled:
        arguments = "\n".join(f"{aspect}: {json.dumps(self.arguments.get(aspect, {}))}" for aspect in self.aspects)
        allowed = (*self.aspects, "none")
        verdict = await checked_verdict(
            self.user,
            [{"role": "system", "content": _SEARCH_SYSTEM},
             {"role": "user", "content": f"Aspects and right arguments:\n{arguments}\n\nThe query:\n{quote(query)}"}],
            fields={"aspect": str}, check=one_of("aspect", allowed),
        )
        aspect = canonical(verdict["aspect"], allowed)
        if aspect == "none":
            return ("The search request does not match what the traveller needs, or mixes several requests. Search "
                    "for one travel aspect at a time with accurate arguments.", 0.0, False, {"search": None})
        if aspect not in self.unsearched:
            return (f"You already have the search results for {aspect}; refer to them.", 0.0, False,
                    {"search": aspect, "repeat": True})
        self.unsearched.remove(aspect)
        options = "\n".join(json.dumps(option) for option in self.all_options.get(aspect, []))
        return (f"Search results: all options for {aspect}:\n{options}", self.search_reward, False, {"search": aspect})

    async def _talk(self, message: str) -> Handled:
        hidden = [p for p in self.preferences if p["aspect"] not in self.answered]
        listed = "\n".join(f"{p['id']} ({p['aspect']}): {p['preference']}" for p in hidden) or "(none left)"
        ids = {p["id"] for p in hidden}

        def check(verdict: dict) -> str | None:
            problem = one_of("kind", _KINDS)(verdict)
            if problem is None and verdict["kind"].strip().lower() == "preference" \
                    and verdict["preference_id"].strip() not in ids:
                problem = f"'preference_id' must be one of the listed ids ({', '.join(sorted(ids)) or 'none'})"
            return problem

        context = f"Trip: {self.scenario}\n\n" + self._dialogue()
        verdict = await checked_verdict(
            self.user,
            [{"role": "system", "content": _CLASSIFY_SYSTEM},
             {"role": "user", "content": f"{context}Your hidden preferences:\n{listed}\n\nThe agent's latest "
                                         f"message:\n{quote(message)}"}],
            fields={"kind": str, "preference_id": str}, check=check,
        )
        kind = canonical(verdict["kind"], _KINDS)
        reward, info = 0.0, {"kind": kind}
        if kind == "preference":
            preference = next(p for p in hidden if p["id"] == verdict["preference_id"].strip())
            self.preferences.remove(preference)
            reply = await self._say(_REVEAL_SYSTEM, f"{context}Your preference ({preference['aspect']}): "
                                                    f"{preference['preference']}\nHint for how to say it: "
                                                    f"{preference['hint']}\n\nThe agent:\n{quote(message)}")
            reward, info["preference"] = self.preference_reward, preference["id"]
        elif kind == "not_mine":
            reply = _NOT_MINE
        elif kind == "vague":
            reply = _VAGUE
        else:
            reply = await self._say(_CHAT_SYSTEM, f"{context}The agent:\n{quote(message)}")
        self.history.append((message, reply))
        return reply, reward, False, info

    async def _say(self, system: str, prompt: str) -> str:
        reply = (await self.user.reply([{"role": "system", "content": system},
                                        {"role": "user", "content": prompt}])).strip()
        if not reply:
            raise SimulatorFailure("travel user simulator returned an empty reply")
        return reply

    def _dialogue(self) -> str:
        if not self.history:
            return ""
        turns = "\n".join(f"Agent: {quote(agent)}\nYou: {you}" for agent, you in self.history)
        return f"Conversation so far:\n{turns}\n\n"

    def _answer(self, content: str) -> Handled:
        ids = [part.strip() for part in content.split(",") if part.strip()]
        if len(ids) != 1:
            return "Recommend exactly one option id at a time.", 0.0, False, {"answer_error": "count"}
        option = ids[0]
        if not _OPTION_ID.fullmatch(option):
            return (f"{option!r:.40} is not an option id (expected e.g. F12, H3, C4).", 0.0, False,
                    {"answer_error": "format"})
        aspect = ASPECT_BY_INITIAL[option[0]]
        if aspect in self.answered:
            return (f"You already recommended an option for {aspect}; only one per aspect is allowed. Work on the "
                    f"other aspects.", 0.0, False, {"answer_error": "repeat"})
        self.answered[aspect] = option
        if aspect in self.best and option == self.best[aspect]:
            reward, verdict = BEST_REWARD, "the best option"
        elif option in self.correct.get(aspect, set()):
            reward, verdict = CORRECT_REWARD, "an acceptable option, but not the best one"
        else:
            reward, verdict = 0.0, "not one of the acceptable options"
        done = all(aspect in self.answered for aspect in self.aspects)
        feedback = (f"Your recommendation is {verdict}. It is recorded; do not recommend another {aspect} option. "
                    f"Continue with the other aspects.")
        return feedback, reward, done, {"answer": option, "aspect": aspect}


def _number(options: Mapping[str, Any], key: str, default: float) -> float:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"algorithm.infopo.env.{key} must be a number, got {value!r}")
    return float(value)
