"""ColBench backend programming (SWEET-RL, arXiv 2503.15478): write a Python function with a user who knows more.

Protocol and scoring (facts from ColBench's public code; prompts and code here are ours):

- A task: ``problem_description`` (the user's underspecified request, the first user message),
  ``hidden_information`` (what only the simulated user knows; in the backend split, the reference code itself),
  ``ground_truth`` (the reference code) and ``test_cases`` (name -> a Python call such as ``"f(5, 'a')"``).
- At most 10 agent turns (:data:`MAX_TURNS`). A reply containing ``I WANT TO ANSWER:`` ends the dialogue and
  everything after the marker is the code (markdown fences stripped, :func:`extract_answer`). A dialogue that ends
  without the marker (this environment's 10-turn limit, or the loop's ``max_assistant_turns``) is judged on its
  last reply. (A turn cut by the response-token budget never reaches the environment: the reply before it is
  judged. A loop limit below 10 costs one simulator reply nobody reads, for the last turn: set both to 10.)
- The user simulator is told the request and the hidden information and answers only from it, in at most two
  sentences; its reply is cut to 400 characters (:data:`REPLY_CHARS`). Evaluation runs it at temperature 0
  (``algorithm.infopo.user.temperature=0``). A simulator that gives no reply ends the dialogue with the failure
  recorded (the agent loop's rule for every family; the original continues with an empty reply).
- Score: for every test, the reference output is the call's value after executing ``ground_truth`` as a module,
  the candidate output its value after executing the answer; the test passes when both are equal under ``==`` and
  the reference output is not None. Reward = fraction of tests passed. A reply containing any of
  :data:`BLACKLIST` (a plain substring test on the reply, as in the original) scores 0 without running.
  Metrics: ``pass`` = that fraction, ``succ`` = 1 when every test passed (the paper's Pass and Succ, as means).

Departure from the original judge, which executes the answer in its own process under a 1 s alarm: both codes run
in :mod:`infopo_verl.sandbox` (separate processes, namespaces, limits; the reference outputs are computed in a
sandbox of their own and cached per task), and values cross processes as plain data, so only builtin values (and
Decimal, Fraction, naive datetime types) compare; a test whose values are of another type fails.

Options (``algorithm.infopo.env``): ``colbench_isolation`` (``namespaces``, the default, or ``none`` to accept
running without namespaces where the system has none) and ``colbench_concurrency`` (sandboxes at once per worker).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import json
import re
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from infopo_verl.envs.base import Action, Environment, StepResult
from infopo_verl.envs.userrl.common import load_task, quote, require_field, require_user
from infopo_verl.sandbox import CallResult, Sandbox, SandboxConfig
from infopo_verl.users.base import UserSimulator

__all__ = [
    "ColBenchEnv",
    "ColBenchJudge",
    "Judgement",
    "ANSWER_MARKER",
    "BLACKLIST",
    "DATA_SOURCE",
    "MAX_TURNS",
    "REPLY_CHARS",
    "extract_answer",
    "blacklisted",
    "system_prompt",
    "simulator_prompt",
    "judge_for_options",
]

DATA_SOURCE = "colbench_backend"
ANSWER_MARKER = "I WANT TO ANSWER:"
"""ColBench: the marker that ends the dialogue; the code follows it."""
MAX_TURNS = 10
"""ColBench: at most 10 agent turns per dialogue."""
REPLY_CHARS = 400
"""ColBench: the simulated user's reply is cut to this many characters."""
BLACKLIST = ("import os", "import sys", "exit(", "quit(", "sudo", "argparse", "transformers")
"""ColBench's rule: a reply containing any of these scores 0 (kept for comparable numbers, not as a defence: the
sandbox is the defence)."""
OPTION_KEYS = ("colbench_isolation", "colbench_concurrency")
ISOLATION_SETTING = "algorithm.infopo.env.colbench_isolation"
REFERENCE_CACHE_SIZE = 10_000
"""Tasks whose reference outputs are kept in memory (ours; ColBench's train split has 10k tasks)."""

_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|$)", re.DOTALL)


def system_prompt() -> str:
    """The agent's instructions (ours): the protocol, the marker and the rules that zero a reply."""
    return (
        "You are a software engineer writing a Python function for a user. Their request may leave out details "
        "that only they know (expected inputs, edge cases, exact outputs): ask them, one short message at a time. "
        f"You have at most {MAX_TURNS} messages in all. When you are ready, reply with `{ANSWER_MARKER}` followed "
        "by the complete Python code: the function with the name and arguments the user expects, plus every "
        "import and helper it needs. Everything after the marker is run against the user's hidden tests; if you "
        "have not answered by your last message, that message is taken as the answer. Code that imports os or "
        "sys, calls exit or quit, or uses sudo, argparse or transformers scores zero."
    )


def simulator_prompt(problem: str, hidden_information: str) -> str:
    """The simulated user's instructions (ours): answer from the hidden information only, briefly."""
    return (
        "You are a user who asked an assistant to write a Python function. Your request was:\n"
        f"{quote(problem)}\n"
        "Only you know the details below (they may be written as code). Answer the assistant's questions using "
        "only this information, in at most two short sentences, in plain words; do not write code and do not "
        "reveal more than the question asks. If the information does not answer a question, say you don't know.\n"
        f"Your hidden information:\n{quote(hidden_information)}"
    )


def extract_answer(reply: str) -> str:
    """The code in ``reply``: after the first ``I WANT TO ANSWER:`` (the whole reply without one), the content of
    the first markdown fence when there is one, else the text itself."""
    position = reply.find(ANSWER_MARKER)
    code = reply[position + len(ANSWER_MARKER):] if position >= 0 else reply
    fenced = _FENCE.search(code)
    return (fenced.group(1) if fenced else code).strip()


def blacklisted(reply: str) -> str | None:
    """The first blacklisted substring in ``reply``, or None."""
    return next((word for word in BLACKLIST if word in reply), None)


@dataclasses.dataclass(frozen=True)
class Judgement:
    """One judged answer: which tests passed and why the others did not."""

    passed: tuple[bool, ...]
    reasons: tuple[str, ...]
    """Per test: ``passed``, ``reference is None``, ``reference failed: <status>``, ``<status>`` of the candidate
    (error, timeout, ...), ``different value``, or the blacklisted substring."""

    @property
    def fraction(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0

    @property
    def success(self) -> bool:
        return bool(self.passed) and all(self.passed)


class ColBenchJudge:
    """Scores answers against reference code, both run in :class:`~infopo_verl.sandbox.Sandbox` processes.

    Reference outputs are computed once per (ground truth, calls) and kept in this process (the judge's state,
    never handed to a sandbox); concurrent dialogues of one task share one reference run.
    """

    def __init__(self, sandbox: Sandbox):
        self.sandbox = sandbox
        self._references: collections.OrderedDict[str, list[CallResult]] = collections.OrderedDict()
        self._in_flight: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def reference(self, ground_truth: str, calls: Sequence[str]) -> list[CallResult]:
        key = hashlib.sha256(json.dumps([ground_truth, list(calls)]).encode()).hexdigest()
        if key in self._references:
            self._references.move_to_end(key)
            return self._references[key]
        pending = self._in_flight.setdefault(asyncio.get_running_loop(), {})
        if key not in pending:
            pending[key] = asyncio.ensure_future(self.sandbox.run(ground_truth, calls))
        try:
            results = await asyncio.shield(pending[key])
        finally:
            if key in pending and pending[key].done():
                del pending[key]
        self._references[key] = results
        while len(self._references) > REFERENCE_CACHE_SIZE:
            self._references.popitem(last=False)
        return results

    async def judge(self, ground_truth: str, test_cases: Mapping[str, str], reply: str) -> Judgement:
        calls = list(test_cases.values())
        word = blacklisted(reply)
        if word is not None:
            return Judgement((False,) * len(calls), (f"blacklisted: {word!r}",) * len(calls))
        answer = extract_answer(reply)
        references = await self.reference(ground_truth, calls)
        if not answer.strip():
            return Judgement((False,) * len(calls), ("empty answer",) * len(calls))
        candidates = await self.sandbox.run(answer, calls)
        passed, reasons = [], []
        for reference, candidate in zip(references, candidates, strict=True):
            if not reference.ok:
                verdict, reason = False, f"reference failed: {reference.status}"
            elif reference.value is None:
                verdict, reason = False, "reference is None"
            elif not candidate.ok:
                verdict, reason = False, candidate.status
            else:
                # Both values are fresh builtins rebuilt by the judge: this == runs no code the answer chose.
                verdict = bool(candidate.value == reference.value)
                reason = "passed" if verdict else "different value"
            passed.append(verdict)
            reasons.append(reason)
        return Judgement(tuple(passed), tuple(reasons))


_judges: dict[SandboxConfig, ColBenchJudge] = {}
_judges_lock = threading.Lock()


def judge_for_options(options: Mapping[str, Any] | None) -> ColBenchJudge:
    """The process's shared judge for ``algorithm.infopo.env`` (one sandbox bound and cache per setting)."""
    options = options or {}
    unknown = sorted(key for key in options if str(key).startswith("colbench_") and key not in OPTION_KEYS)
    if unknown:
        raise ValueError(f"unknown ColBench option(s) algorithm.infopo.env.{', '.join(unknown)}; known: "
                         f"{', '.join(OPTION_KEYS)}")
    settings: dict[str, Any] = {}
    if options.get("colbench_isolation") is not None:
        settings["isolation"] = options["colbench_isolation"]
    if options.get("colbench_concurrency") is not None:
        settings["concurrency"] = options["colbench_concurrency"]
    try:
        config = SandboxConfig(**settings)
    except ValueError as error:
        raise ValueError(f"algorithm.infopo.env.colbench_*: {error}") from None
    with _judges_lock:
        judge = _judges.get(config)
        if judge is None:
            judge = _judges[config] = ColBenchJudge(Sandbox(config, isolation_setting=ISOLATION_SETTING))
        return judge


class ColBenchEnv(Environment):
    """One ColBench backend dialogue: the simulator answers questions, the judge scores the final code."""

    family = "colbench"

    def __init__(self, problem: str, hidden_information: str, ground_truth: str, test_cases: Mapping[str, str],
                 user: UserSimulator, judge: ColBenchJudge):
        self.problem, self.ground_truth = problem, ground_truth
        self.test_cases = dict(test_cases)
        self.user, self.judge = user, judge
        self.simulator_chat: list[dict[str, str]] = [
            {"role": "system", "content": simulator_prompt(problem, hidden_information)}
        ]
        self.turns = 0
        self.last_reply: str | None = None
        self.answered = False
        self.done = False
        self.judgement: Judgement | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], user: UserSimulator | None, options: Mapping[str, Any]) -> ColBenchEnv:
        task = load_task(row, cls.family)
        problem = require_field(task, "problem_description", str, cls.family)
        hidden = require_field(task, "hidden_information", str, cls.family)
        ground_truth = require_field(task, "ground_truth", str, cls.family)
        test_cases = require_field(task, "test_cases", dict, cls.family)
        for name, call in test_cases.items():
            if not isinstance(call, str) or not call.strip():
                raise ValueError(f"extra_info.infopo.task.test_cases.{name} of a colbench row must be a Python call "
                                 f"expression, got {call!r:.80}")
        user = require_user(user, cls.family, "it plays the user who knows the hidden information")
        return cls(problem, hidden, ground_truth, test_cases, user, judge_for_options(options))

    async def step(self, action: Action) -> StepResult:
        if self.done:
            return StepResult(feedback="", done=True, info={"error": "the dialogue already ended"})
        # Plain text is the protocol; a (mis)formed tool call is judged as the text the agent wrote.
        reply = action.content if action.choice is None and action.parse_error is None else action.raw
        self.turns += 1
        self.last_reply = reply
        if ANSWER_MARKER in reply:
            self.answered = self.done = True
            return StepResult(feedback="", done=True, info={"answered": True})
        if self.turns >= MAX_TURNS:
            self.done = True
            return StepResult(feedback="", done=True, info={"answered": False, "turn_limit": MAX_TURNS})
        self.simulator_chat.append({"role": "user", "content": reply})
        answer = (await self.user.reply(list(self.simulator_chat)))[:REPLY_CHARS]
        self.simulator_chat.append({"role": "assistant", "content": answer})
        return StepResult(feedback=answer, done=False)

    async def final_score(self) -> float:
        """Fraction of the tests the answer (or the last reply) passes; 0 when the agent never replied."""
        if self.judgement is None:
            if self.last_reply is None:
                self.judgement = Judgement((False,) * len(self.test_cases), ("no reply",) * len(self.test_cases))
            else:
                self.judgement = await self.judge.judge(self.ground_truth, self.test_cases, self.last_reply)
        return self.judgement.fraction

    def task_metrics(self) -> dict[str, float]:
        """``pass`` and ``succ`` of the judged answer; 0 for a dialogue never judged (its simulator failed)."""
        if self.judgement is None:
            return {"pass": 0.0, "succ": 0.0}
        return {"pass": self.judgement.fraction, "succ": float(self.judgement.success)}
