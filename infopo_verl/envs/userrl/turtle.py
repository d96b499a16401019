"""TurtleGym (lateral-thinking "turtle soup"): uncover the hidden story behind a strange surface.

Rules and scoring (facts from UserRL's TurtleGym prompts and environment config at cf55a30, and the story file
``all_stories_refined.json``, whose ``evaluation`` lists weighted statements that sum to 1):

- ``action``: a yes/no question; the simulator, knowing the hidden story (the bottom), answers ``Yes``, ``No`` or
  ``Maybe``. Reward 0.
- ``answer``: a full explanation. The simulator grades it against each evaluation statement with 0, 0.5 or 1; the
  answer's score is ``sum(weight * grade)``. The step reward is the improvement over the best score so far,
  ``max(0, score - best)``, so the rewards of a dialogue sum to its best answer's score. A score of 1.0 (UserRL's
  ``success_threshold``) ends the dialogue. The feedback names the statements graded 1 (what the story got right),
  never the hidden story.
- Score: sum of step rewards = the best answer's score, in [0, 1].

Prompts are ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infopo_verl.envs.userrl.common import (
    Handled, UserRLEnvironment, canonical, checked_verdict, load_task, one_of, quote, require_field, require_user,
)
from infopo_verl.envs.userrl.telepathy import ANSWERS
from infopo_verl.users.base import UserSimulator

__all__ = ["TurtleEnv", "GRADES", "SUCCESS_THRESHOLD"]

GRADES = (0.0, 0.5, 1.0)
"""The per-statement grades UserRL's judge may give (none, partly, fully covered)."""
SUCCESS_THRESHOLD = 1.0 - 1e-6
"""UserRL's ``success_threshold = 1.0``; the file's weights sum to 1 up to float rounding, hence the margin."""

_QUESTION_SYSTEM = (
    "You host a lateral-thinking puzzle. The player sees only the surface of a story and asks yes/no questions to "
    "find the hidden truth behind it. You know the hidden truth. Answer Yes when the question is right according to "
    "the hidden truth, No when it is wrong or contradicts it, Maybe only when neither the surface nor the hidden "
    "truth settles it. Be decisive.\n"
    'Reply with exactly one JSON object: {"answer": "Yes" | "No" | "Maybe"}.'
)
_GRADE_SYSTEM = (
    "You grade a player's explanation of a lateral-thinking puzzle against the hidden truth. For each numbered key "
    "point, give 1 if the explanation states it (the wording may differ), 0.5 if it gets it partly right, 0 if it "
    "misses or contradicts it.\n"
    'Reply with exactly one JSON object: {"grades": [one number per key point, in order]}.'
)


class TurtleEnv(UserRLEnvironment):
    family = "turtle"
    choices = ("action", "answer")

    def __init__(self, surface: str, bottom: str, criteria: list[tuple[str, float]], user: UserSimulator,
                 options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.surface, self.bottom, self.criteria = surface, bottom, criteria
        self.user = user
        self.best_score = 0.0

    @classmethod
    def from_row(cls, row: Mapping[str, Any], user: UserSimulator | None, options: Mapping[str, Any]) -> TurtleEnv:
        task = load_task(row, cls.family)
        surface = require_field(task, "surface", str, cls.family)
        bottom = require_field(task, "bottom", str, cls.family)
        criteria = []
        for index, item in enumerate(require_field(task, "evaluation", list, cls.family)):
            statement = item.get("statement") if isinstance(item, Mapping) else None
            weight = item.get("weight") if isinstance(item, Mapping) else None
            if not isinstance(statement, str) or not isinstance(weight, (int, float)) or isinstance(weight, bool):
                raise ValueError(f"extra_info.infopo.task.evaluation[{index}] must be "
                                 f"{{'statement': text, 'weight': number}}, got {item!r:.80}")
            criteria.append((statement, float(weight)))
        return cls(surface, bottom, criteria, require_user(user, cls.family, "it answers questions and grades stories"),
                   options)

    async def handle(self, choice: str, content: str) -> Handled:
        if choice == "action":
            prompt = (f"Surface:\n{self.surface}\n\nHidden truth:\n{self.bottom}\n\n"
                      f"The player's question:\n{quote(content)}")
            verdict = await checked_verdict(
                self.user, [{"role": "system", "content": _QUESTION_SYSTEM}, {"role": "user", "content": prompt}],
                fields={"answer": str}, check=one_of("answer", ANSWERS),
            )
            answer = canonical(verdict["answer"], ANSWERS)
            return answer, 0.0, False, {"answer": answer}
        return await self._grade(content)

    async def _grade(self, story: str) -> Handled:
        points = "\n".join(f"{index + 1}. {statement}" for index, (statement, _) in enumerate(self.criteria))
        prompt = (f"Surface:\n{self.surface}\n\nHidden truth:\n{self.bottom}\n\nKey points:\n{points}\n\n"
                  f"The player's explanation:\n{quote(story)}")

        def check(verdict: dict) -> str | None:
            grades = verdict["grades"]
            if len(grades) != len(self.criteria):
                return f"'grades' must have {len(self.criteria)} numbers, one per key point (got {len(grades)})"
            if any(isinstance(g, bool) or not isinstance(g, (int, float)) or float(g) not in GRADES for g in grades):
                return "every grade must be 0, 0.5 or 1"
            return None

        verdict = await checked_verdict(
            self.user, [{"role": "system", "content": _GRADE_SYSTEM}, {"role": "user", "content": prompt}],
            fields={"grades": list}, check=check,
        )
        grades = [float(g) for g in verdict["grades"]]
        score = sum(weight * grade for (_, weight), grade in zip(self.criteria, grades))
        reward = max(0.0, score - self.best_score)
        self.best_score = max(self.best_score, score)
        covered = [statement for (statement, _), grade in zip(self.criteria, grades) if grade == 1.0]
        if covered:
            feedback = ("Your story gets these key points right:\n" + "\n".join(f"- {s}" for s in covered)
                        + "\nThere may be more to uncover: keep asking and answer again.")
        else:
            feedback = "Your story does not get any key point right yet."
        done = self.best_score >= SUCCESS_THRESHOLD
        return feedback, reward, done, {"grades": grades, "answer_score": score, "best_score": self.best_score}
