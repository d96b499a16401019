"""What every UserGym family shares: the row format, the ``interact_with_env`` tool, step bookkeeping, judging.

Rows written by ``infopo-verl prepare userrl`` carry ``extra_info.infopo = {"env": <family>, "task": <JSON text>,
"tools": [INTERACT_TOOL]}``; ``task`` holds the hidden facts of one task (JSON text, so rows of every family share
one parquet schema). :class:`UserRLEnvironment` turns an :class:`~infopo_verl.envs.base.Action` into the gym's
handler call and keeps the step rewards.

Scoring, as UserRL defines it (facts from SalesforceAIResearch/UserRL at cf55a30):

- each step returns a reward; the tool message the agent sees is the feedback followed by ``Reward: <r>``
  (``verl/tools/interact_tool.py``); ``algorithm.infopo.env.show_step_reward=false`` drops that line;
- an episode's score is the sum of its step rewards (``eval/eval.py`` sums the rewards of a rollout); each gym
  shapes its step rewards so that the sum is the task's score (Turtle pays improvements over the best answer so
  far, Telepathy / Function / Search pay once on success). ``final_score`` returns that sum.

Departure from UserRL: where a gym's judge call fails UserRL substitutes a default (reward 0, "please try again");
here every judged part goes through :func:`~infopo_verl.users.verdict.ask_verdict` with re-asks, and a judge that
never answers properly raises :class:`~infopo_verl.users.base.SimulatorFailure`, which ends the dialogue with the
failure recorded: a verdict is never guessed. Simulator text is untrusted: it is quoted to other prompts between
markers, never parsed beyond the JSON verdict, never executed.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from infopo_verl.envs.base import Action, Environment, StepResult
from infopo_verl.envs.registry import task_fields
from infopo_verl.users.base import ChatMessage, SimulatorFailure, UserSimulator
from infopo_verl.users.verdict import ask_verdict

__all__ = [
    "INTERACT_TOOL",
    "USER_BACKEND_KEY",
    "UserRLEnvironment",
    "Handled",
    "checked_verdict",
    "quote",
    "require_field",
    "require_user",
    "load_task",
]

USER_BACKEND_KEY = "algorithm.infopo.user.backend"
TOOL_NAME = "interact_with_env"

INTERACT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": (
            "Interact with the environment: talk to the user, search, or give an answer. The system prompt says "
            "which choices this environment accepts and what the content must be."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "choice": {
                    "type": "string",
                    "enum": ["action", "answer", "search"],
                    "description": "`action`, `search` or `answer`, as the system prompt allows.",
                },
                "content": {
                    "type": "string",
                    "description": "The message, query or answer that goes with the choice.",
                },
            },
            "required": ["choice", "content"],
        },
    },
}
"""The OpenAI function schema of UserRL's single tool ``interact_with_env(choice, content)`` (the choice enum and
the two required string arguments are UserRL's, ``eval/README.md``; the descriptions are ours)."""

Handled = tuple[str, float, bool, dict[str, Any]]
"""What a family's handler returns: (feedback, step reward, done, info)."""


def load_task(row: Mapping[str, Any], family: str) -> dict[str, Any]:
    """The decoded ``extra_info.infopo.task`` of ``row``, checked to belong to ``family``."""
    if not isinstance(row, Mapping):
        raise ValueError(f"{family} row must be a mapping of dataset columns, got {type(row).__name__}")
    fields = task_fields(row.get("extra_info"))
    if fields.get("env") != family:
        raise ValueError(f"extra_info.infopo.env is {fields.get('env')!r}, expected {family!r}")
    task = fields.get("task")
    if isinstance(task, str):
        try:
            task = json.loads(task)
        except json.JSONDecodeError as error:
            raise ValueError(f"extra_info.infopo.task of a {family} row is not valid JSON ({error})") from None
    if not isinstance(task, Mapping):
        raise ValueError(
            f"extra_info.infopo.task of a {family} row must be a JSON object with the task's hidden facts, got "
            f"{type(task).__name__}; rows are written by `infopo-verl prepare userrl`"
        )
    return dict(task)


def require_field(task: Mapping[str, Any], name: str, kind: type | tuple[type, ...], family: str) -> Any:
    """``task[name]`` when present, non-empty and of type ``kind``; else a ValueError naming the field."""
    value = task.get(name)
    if value is None:
        raise ValueError(f"extra_info.infopo.task.{name} is missing in a {family} row")
    kinds = kind if isinstance(kind, tuple) else (kind,)
    wrong_type = not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)
    if wrong_type or (isinstance(value, (str, list, dict)) and not value):
        raise ValueError(f"extra_info.infopo.task.{name} of a {family} row must be a non-empty {_kind_name(kind)}, "
                         f"got {value!r:.80}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def require_user(user: UserSimulator | None, family: str, why: str) -> UserSimulator:
    """The simulator, or a ValueError saying that ``family`` has no scripted rules and which key to set."""
    if user is None:
        raise ValueError(
            f"the {family} task needs a user simulator ({why}); it has no deterministic rules, so "
            f"{USER_BACKEND_KEY}=scripted cannot play it: set {USER_BACKEND_KEY}=openai or policy"
        )
    return user


def quote(text: str) -> str:
    """Untrusted text for a prompt, between markers the text itself cannot close."""
    cleaned = str(text).replace("<<<", "< < <").replace(">>>", "> > >")
    return f"<<<\n{cleaned}\n>>>"


async def checked_verdict(
    user: UserSimulator,
    messages: list[ChatMessage],
    *,
    fields: Mapping[str, type | tuple[type, ...]],
    check: Callable[[dict], str | None],
    attempts: int = 3,
) -> dict:
    """A typed verdict (``ask_verdict``) whose values also pass ``check`` (which returns the problem or None).

    A verdict with a bad value (a stance that is not on the scale, a criterion count that does not match) is shown
    back with the problem and asked again, at most ``attempts`` verdicts in all; then SimulatorFailure.
    """
    chat = list(messages)
    problem = ""
    for _ in range(attempts):
        verdict = await ask_verdict(user, chat, fields=fields, attempts=attempts)
        problem = check(verdict) or ""
        if not problem:
            return verdict
        chat = chat + [
            {"role": "assistant", "content": json.dumps(verdict)},
            {"role": "user", "content": f"That verdict is not valid: {problem}. Reply again with one corrected JSON object."},
        ]
    raise SimulatorFailure(f"invalid verdict after {attempts} attempts: {problem}")


def one_of(field: str, allowed: tuple[str, ...]) -> Callable[[dict], str | None]:
    """A ``check`` for :func:`checked_verdict`: ``verdict[field]`` must be one of ``allowed`` (case-insensitive)."""

    def check(verdict: dict) -> str | None:
        value = str(verdict.get(field, "")).strip().lower()
        if value not in {option.lower() for option in allowed}:
            return f"{field!r} must be one of {', '.join(allowed)} (got {verdict.get(field)!r:.60})"
        return None

    return check


def canonical(value: str, allowed: tuple[str, ...]) -> str:
    """The spelling in ``allowed`` of a value already checked by :func:`one_of`."""
    lowered = value.strip().lower()
    return next(option for option in allowed if option.lower() == lowered)


class UserRLEnvironment(Environment):
    """One UserGym dialogue: validates the action's choice, calls the family's handler, keeps step rewards.

    Subclasses set ``family`` and ``choices`` (the choices their system prompt offers) and implement ``handle``.
    """

    family: ClassVar[str] = "userrl"
    choices: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Mapping[str, Any] | None = None):
        options = options or {}
        show = options.get("show_step_reward", True)
        if not isinstance(show, bool):
            raise ValueError(f"algorithm.infopo.env.show_step_reward must be true or false, got {show!r}")
        self.show_step_reward = show
        self.step_rewards: list[float] = []
        self.done = False

    @abstractmethod
    async def handle(self, choice: str, content: str) -> Handled:
        """Apply one well-formed action (``choice`` is in ``self.choices``)."""

    async def step(self, action: Action) -> StepResult:
        if self.done:
            return StepResult(feedback="", done=True, info={"error": "the dialogue already ended"})
        if action.parse_error is not None:
            feedback = (f"Your tool call could not be read: {action.parse_error}. Call `{TOOL_NAME}` with a "
                        f"`choice` and a `content`.")
            return self._record(feedback, 0.0, False, {"parse_error": action.parse_error}, env_error=True)
        if action.choice is None:
            feedback = (f"No tool call found. Interact with the environment by calling `{TOOL_NAME}` with a choice "
                        f"among {', '.join(self.choices)} and a content.")
            return self._record(feedback, 0.0, False, {"invalid_action": "plain text"}, env_error=True)
        if action.choice not in self.choices:
            feedback = (f"The choice {action.choice!r:.40} is not available here; use one of "
                        f"{', '.join(self.choices)}.")
            info = {"invalid_action": f"choice {action.choice!r:.40}"}
            return self._record(feedback, 0.0, False, info, env_error=True)
        feedback, reward, done, info = await self.handle(action.choice, action.content)
        return self._record(feedback, reward, done, info)

    def _record(
        self, feedback: str, reward: float, done: bool, info: Mapping[str, Any], *, env_error: bool = False
    ) -> StepResult:
        reward = float(reward)
        self.step_rewards.append(reward)
        self.done = done
        text = f"{feedback}\nReward: {reward}" if self.show_step_reward else feedback
        return StepResult(
            feedback="" if done else text,
            done=done,
            reward=reward,
            info={**info, "feedback": feedback, "step_reward": reward},
            env_error=env_error,
        )

    async def final_score(self) -> float:
        """The sum of the step rewards so far (UserRL's episode score)."""
        return float(sum(self.step_rewards))
