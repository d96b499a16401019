"""PersuadeGym: argue the simulator out of a claim it holds.

Rules and scoring (facts from UserRL's PersuadeGym prompts and README at cf55a30):

- The simulator starts at ``Strongly Agree`` with the claim and its own supporting argument, on the 7-level scale
  ``Strongly Agree, Agree, Partly Agree, Neutral, Partly Disagree, Disagree, Strongly Disagree``.
- ``answer`` (and ``action``, which UserRL treats the same): an argument; the simulator replies and states its new
  stance. Step reward = levels moved toward disagreement since its previous stance, divided by 6 (0 for no move or
  a move back), so one turn from Strongly Agree to Strongly Disagree pays 1.0. Reaching ``Strongly Disagree`` ends
  the dialogue. (UserRL's README lists another table, 0.6/0.8/0.9/...; its code, followed here, pays levels / 6.)
- Score: sum of step rewards.

Prompts are ours; the reply shown to the agent is the simulator's response text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infopo_verl.envs.userrl.common import (
    Handled, UserRLEnvironment, canonical, checked_verdict, load_task, one_of, quote, require_field, require_user,
)
from infopo_verl.users.base import UserSimulator

__all__ = ["PersuadeEnv", "STANCES", "stance_reward"]

STANCES = ("Strongly Agree", "Agree", "Partly Agree", "Neutral", "Partly Disagree", "Disagree", "Strongly Disagree")


def stance_reward(previous: str, current: str) -> float:
    """UserRL's step reward: levels moved toward disagreement / 6, never negative."""
    moved = STANCES.index(current) - STANCES.index(previous)
    return max(0.0, min(1.0, moved / (len(STANCES) - 1)))


_SYSTEM = (
    "You take part in a debate. You hold a claim and someone tries to change your mind. Read their latest argument, "
    "answer it in a natural, respectful and critical way (point out weak reasoning), and then say where you stand "
    "now. Change your stance only as far as the arguments really convince you.\n"
    "Stances: " + ", ".join(STANCES) + ".\n"
    'Reply with exactly one JSON object: {"response": "<your reply, at most about 150 words, addressing them as '
    'you>", "stance": "<one of the stances>"}.'
)


class PersuadeEnv(UserRLEnvironment):
    family = "persuade"
    choices = ("answer", "action")

    def __init__(self, claim: str, argument: str, user: UserSimulator, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.claim, self.argument = claim, argument
        self.user = user
        self.stance = STANCES[0]
        self.history: list[tuple[str, str]] = []

    @classmethod
    def from_row(cls, row: Mapping[str, Any], user: UserSimulator | None, options: Mapping[str, Any]) -> PersuadeEnv:
        task = load_task(row, cls.family)
        claim = require_field(task, "claim", str, cls.family)
        argument = require_field(task, "argument", str, cls.family)
        return cls(claim, argument, require_user(user, cls.family, "it is the one to persuade"), options)

    async def handle(self, choice: str, content: str) -> Handled:
        past = "\n\n".join(f"Turn {i + 1}\nThem:\n{quote(theirs)}\nYou: {yours}"
                           for i, (theirs, yours) in enumerate(self.history)) or "(this is their first argument)"
        prompt = (f"Claim you hold: {self.claim}\n\nYour own argument for it:\n{self.argument}\n\n"
                  f"Your stance so far: {self.stance}\n\nThe debate so far:\n{past}\n\n"
                  f"Their latest argument:\n{quote(content)}")
        verdict = await checked_verdict(
            self.user, [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": prompt}],
            fields={"response": str, "stance": str}, check=one_of("stance", STANCES),
        )
        stance = canonical(verdict["stance"], STANCES)
        reward = stance_reward(self.stance, stance)
        previous, self.stance = self.stance, stance
        response = verdict["response"].strip()
        self.history.append((content, response))
        return response, reward, stance == STANCES[-1], {"previous_stance": previous, "stance": stance}
