"""IntentionGym: ask a vague requester for the missing details of their task (held out from training).

Rules and scoring (facts from UserRL's IntentionGym environment and README at cf55a30; the details, with an
importance 1-3 and example options, come from ``all_intentions_{train,test}.json``):

- ``action``: one clarifying question. The simulator, playing the requester, decides which still-missing details
  the question asks about and answers them (picking one of each detail's options or something close).
- Step reward: by the highest importance among the details the question covered, 3 -> 1.0, 2 -> 0.7, 1 -> 0.4,
  minus 0.2 for every extra detail covered by the same question (focused questions are wanted), clipped to
  [0, 1]; 0 when it covers none. The dialogue ends when no detail is missing.
- Score: sum of step rewards.

Prompts are ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infopo_verl.envs.userrl.common import (
    Handled, UserRLEnvironment, checked_verdict, load_task, quote, require_field, require_user,
)
from infopo_verl.users.base import UserSimulator

__all__ = ["IntentionEnv", "IMPORTANCE_REWARD", "MULTI_DETAIL_PENALTY", "question_reward"]

IMPORTANCE_REWARD = {3: 1.0, 2: 0.7, 1: 0.4}
"""UserRL IntentionGym: reward by the covered detail's importance."""
MULTI_DETAIL_PENALTY = 0.2
"""UserRL IntentionGym ``multi_detail_penalty``: per extra detail covered by one question."""


def question_reward(importances: list[int]) -> float:
    if not importances:
        return 0.0
    reward = IMPORTANCE_REWARD[max(importances)] - MULTI_DETAIL_PENALTY * (len(importances) - 1)
    return max(0.0, min(1.0, reward))


_SYSTEM = (
    "You play a person who gave an assistant a vague task. You know the details you left out (listed, numbered). "
    "The assistant asks one question at a time. Decide which of the listed details the question really asks about "
    "(a vague or unrelated question covers none), then answer as the person would: give those details, choosing one "
    "of the example options or something close, and do not volunteer details that were not asked.\n"
    'Reply with exactly one JSON object: {"covered": [numbers of the details the question asks about], '
    '"reply": "<your answer to the assistant>"}.'
)


class IntentionEnv(UserRLEnvironment):
    family = "intention"
    choices = ("action",)

    def __init__(self, task_text: str, category: str, details: list[dict[str, Any]], user: UserSimulator,
                 options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.task_text, self.category = task_text, category
        self.remaining = list(details)
        self.covered: list[dict[str, Any]] = []
        self.user = user

    @classmethod
    def from_row(cls, row: Mapping[str, Any], user: UserSimulator | None, options: Mapping[str, Any]) -> IntentionEnv:
        task = load_task(row, cls.family)
        task_text = require_field(task, "task", str, cls.family)
        category = task.get("category") or ""
        details = []
        for index, item in enumerate(require_field(task, "missing_details", list, cls.family)):
            field = f"extra_info.infopo.task.missing_details[{index}]"
            if not isinstance(item, Mapping) or not isinstance(item.get("description"), str):
                raise ValueError(f"{field} must have a text 'description', got {item!r:.80}")
            try:
                importance = int(item.get("importance"))
            except (TypeError, ValueError):
                importance = None
            if importance not in IMPORTANCE_REWARD:
                raise ValueError(f"{field}.importance must be 1, 2 or 3, got {item.get('importance')!r}")
            options_list = item.get("options") or []
            details.append({"description": item["description"], "importance": importance,
                            "options": [str(option) for option in options_list]})
        return cls(task_text, category, details, require_user(user, cls.family, "it plays the requester"), options)

    async def handle(self, choice: str, content: str) -> Handled:
        listed = "\n".join(
            f"{i + 1}. {d['description']}" + (f" (e.g. {', '.join(d['options'])})" if d["options"] else "")
            for i, d in enumerate(self.remaining)
        )
        prompt = (f"Your task ({self.category}): {self.task_text}\n\nDetails you left out:\n{listed}\n\n"
                  f"The assistant's question:\n{quote(content)}")

        def check(verdict: dict) -> str | None:
            covered = verdict["covered"]
            valid = all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= len(self.remaining)
                        for n in covered)
            if not valid or len(set(covered)) != len(covered):
                return f"'covered' must list distinct detail numbers between 1 and {len(self.remaining)}"
            return None

        verdict = await checked_verdict(
            self.user, [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": prompt}],
            fields={"covered": list, "reply": str}, check=check,
        )
        newly = [self.remaining[n - 1] for n in sorted(verdict["covered"])]
        reward = question_reward([d["importance"] for d in newly])
        self.covered.extend(newly)
        self.remaining = [d for d in self.remaining if d not in newly]
        info = {"covered": [d["description"] for d in newly], "remaining": len(self.remaining)}
        return verdict["reply"].strip(), reward, not self.remaining, info
