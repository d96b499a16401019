"""TelepathyGym: guess a hidden entity by asking yes/no questions (held out from training).

Rules and scoring (facts from UserRL's TelepathyGym prompts at cf55a30):

- ``action``: a yes/no question; the simulator, knowing the entity, answers ``Yes``, ``No`` or ``Maybe``. Reward 0.
- ``answer``: a guess; the simulator judges it. Only an exact or clearly equivalent identification counts (no
  partial credit): reward 1.0 and the dialogue ends; otherwise reward 0 and the agent may keep going.
- Score: sum of step rewards (1.0 when guessed, else 0).

Both parts need the simulator; prompts are ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infopo_verl.envs.userrl.common import (
    Handled, UserRLEnvironment, canonical, checked_verdict, load_task, one_of, quote, require_field, require_user,
)
from infopo_verl.users.base import UserSimulator
from infopo_verl.users.verdict import ask_verdict

__all__ = ["TelepathyEnv", "ANSWERS"]

ANSWERS = ("Yes", "No", "Maybe")

_QUESTION_SYSTEM = (
    "You are the host of a guessing game. You have a secret entity in mind and a player asks yes/no questions "
    "about it. Answer each question truthfully for the secret entity. Use Maybe only when the question has no clear "
    "yes or no answer for it. Never reveal the entity's name.\n"
    'Reply with exactly one JSON object: {"answer": "Yes" | "No" | "Maybe"}.'
)
_GUESS_SYSTEM = (
    "You are the host of a guessing game and judge the player's final guess of your secret entity. The guess is "
    "correct only if it names the secret entity exactly or with a clearly equivalent name; a related, broader or "
    "partly right guess is not correct.\n"
    'Reply with exactly one JSON object: {"correct": true | false}.'
)


class TelepathyEnv(UserRLEnvironment):
    family = "telepathy"
    choices = ("action", "answer")

    def __init__(self, entity: str, user: UserSimulator, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.entity = entity
        self.user = user

    @classmethod
    def from_row(cls, row: Mapping[str, Any], user: UserSimulator | None, options: Mapping[str, Any]) -> TelepathyEnv:
        task = load_task(row, cls.family)
        entity = require_field(task, "target_entity", str, cls.family)
        return cls(entity, require_user(user, cls.family, "it answers the questions and judges the guess"), options)

    async def handle(self, choice: str, content: str) -> Handled:
        if choice == "action":
            prompt = f"Secret entity: {self.entity}\n\nThe player's question:\n{quote(content)}"
            verdict = await checked_verdict(
                self.user, [{"role": "system", "content": _QUESTION_SYSTEM}, {"role": "user", "content": prompt}],
                fields={"answer": str}, check=one_of("answer", ANSWERS),
            )
            answer = canonical(verdict["answer"], ANSWERS)
            return answer, 0.0, False, {"answer": answer}
        prompt = f"Secret entity: {self.entity}\n\nThe player's guess:\n{quote(content)}"
        verdict = await ask_verdict(
            self.user, [{"role": "system", "content": _GUESS_SYSTEM}, {"role": "user", "content": prompt}],
            fields={"correct": bool},
        )
        if verdict["correct"]:
            return "Your guess is correct!", 1.0, True, {"correct": True}
        return ("Your guess is not correct. Keep asking questions and guess again.", 0.0, False, {"correct": False})
