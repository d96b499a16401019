"""SearchGym (Bamboogle): answer a multi-hop question, searching step by step (held out from training).

Rules and scoring (facts from UserRL's SearchGym configuration at cf55a30: ``eval_method = "llm"``, answers may be
given several times):

- ``search``: a query. UserRL sends it to a web search API (Serper); no web search is reachable here, so the
  simulator plays the search engine and returns short factual snippets for the query from its own knowledge. This
  is a departure: results depend on the simulator model, not on the web.
- ``answer``: a short answer, judged by the simulator against the reference answer. Correct -> reward 1.0 and the
  dialogue ends; otherwise reward 0 and the agent may search and answer again.
- Score: sum of step rewards (1.0 when answered, else 0).

Prompts are ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infopo_verl.envs.userrl.common import (
    Handled, UserRLEnvironment, load_task, quote, require_field, require_user,
)
from infopo_verl.users.base import SimulatorFailure, UserSimulator
from infopo_verl.users.verdict import ask_verdict

__all__ = ["SearchEnv"]

_SEARCH_SYSTEM = (
    "You are a web search engine. For the query, return up to three short factual snippets (one or two sentences "
    "each, one per line) that a search engine would return. Give facts only; no opinions, no follow-up questions."
)
_JUDGE_SYSTEM = (
    "You check an answer to a quiz question against the reference answer. It is correct when it means the same "
    "thing as the reference (other spellings, extra middle names or a fuller form are fine); a different or vaguer "
    "answer is not correct.\n"
    'Reply with exactly one JSON object: {"correct": true | false}.'
)


class SearchEnv(UserRLEnvironment):
    family = "search"
    choices = ("search", "answer")

    def __init__(self, question: str, answer: str, user: UserSimulator, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.question, self.answer = question, answer
        self.user = user

    @classmethod
    def from_row(cls, row: Mapping[str, Any], user: UserSimulator | None, options: Mapping[str, Any]) -> SearchEnv:
        task = load_task(row, cls.family)
        question = require_field(task, "question", str, cls.family)
        answer = require_field(task, "answer", str, cls.family)
        return cls(question, answer, require_user(user, cls.family, "it serves the searches and judges the answer"),
                   options)

    async def handle(self, choice: str, content: str) -> Handled:
        if choice == "search":
            results = (await self.user.reply([
                {"role": "system", "content": _SEARCH_SYSTEM},
                {"role": "user", "content": f"Query:\n{quote(content)}"},
            ])).strip()
            if not results:
                raise SimulatorFailure("search simulator returned no results text")
            return f"Search results:\n{results}", 0.0, False, {"query": content}
        prompt = (f"Question: {self.question}\nReference answer: {self.answer}\n\n"
                  f"The answer to check:\n{quote(content)}")
        verdict = await ask_verdict(
            self.user, [{"role": "system", "content": _JUDGE_SYSTEM}, {"role": "user", "content": prompt}],
            fields={"correct": bool},
        )
        if verdict["correct"]:
            return "Your answer is correct!", 1.0, True, {"correct": True}
        return "Your answer is not correct. You may search more and answer again.", 0.0, False, {"correct": False}
