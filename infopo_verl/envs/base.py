"""The task-environment interface the ``infopo_user`` agent loop drives (SPEC section 4).

One :class:`Environment` instance holds one dialogue's task state. It is created from a dataset row, receives the
agent's parsed actions one by one, answers with feedback text, and finally gives the outcome score R.
Environments own their task's rules and scoring; the agent loop owns tokens, turns and information gain; the
reward manager only reads what the rollout recorded.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

from infopo_verl.users.base import UserSimulator

TASK_METRIC_KEYS = ("pass", "succ")
"""Task metrics a family may report (:meth:`Environment.task_metrics`), each a ``reward_extra_info`` column of every
sample, so they reach verl's validation metrics (``val-aux/<data_source>/pass/mean@N``). ColBench: ``pass`` = the
fraction of tests passed, ``succ`` = 1 when all passed (the paper's Pass and Succ)."""


def task_metric_columns(metrics: Mapping[str, Any] | None) -> dict[str, float | None]:
    """One value per :data:`TASK_METRIC_KEYS` for a sample's ``reward_extra_info``: the family's number, or None
    where its family does not report that metric.

    None, not 0: verl averages these columns per ``data_source`` and drops None values before averaging
    (``process_validation_metrics``), so a family without the metric gets no ``pass`` metric rather than a false
    ``pass = 0``, while every sample still carries the same keys (verl stacks the first sample's keys into columns).
    """
    metrics = metrics or {}
    return {key: float(metrics[key]) if metrics.get(key) is not None else None for key in TASK_METRIC_KEYS}


@dataclasses.dataclass(frozen=True)
class Action:
    """One parsed agent turn.

    ``choice`` is UserRL's ``interact_with_env`` choice (``action`` / ``search`` / ``answer``) when the agent made
    that tool call, else None for a plain-text turn. ``content`` is the argument text (or the whole text).
    """

    content: str
    choice: str | None = None
    raw: str = ""
    parse_error: str | None = None
    """Why a tool call could not be parsed (the agent is told, the turn still counts)."""


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What the environment answers to one action."""

    feedback: str
    """Text appended to the dialogue as a non-assistant message (response_mask 0). Empty when ``done``."""
    done: bool
    """True when the dialogue is over (answer given, task solved or failed)."""
    reward: float = 0.0
    """The step reward the task defines (UserRL gyms give one per step); recorded, summed into the outcome only
    where the task says so."""
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    messages: tuple[Mapping[str, str], ...] = ()
    """The feedback as chat messages with roles of the task's choosing (e.g. one ``tool`` message per tool result of
    the turn). Empty: the agent loop sends ``feedback`` as one message whose role it picks."""
    env_error: bool = False
    """The feedback is the environment's own error message about the action's form (a malformed tool call, no
    tool call where one is needed, an unknown choice), not information from the user or the task. Such turns are
    left out of scoring when ``algorithm.infopo.scoring.env_errors=false``."""


class Environment(ABC):
    """A single dialogue's task. Implementations register a ``family`` name in :mod:`infopo_verl.envs.registry`."""

    family: ClassVar[str] = "abstract"

    @classmethod
    @abstractmethod
    def from_row(cls, row: Mapping[str, Any], user: UserSimulator | None, options: Mapping[str, Any]) -> Environment:
        """Build from one dataset row (the agent loop's kwargs: ``extra_info``, ``reward_model``, ...).

        ``user`` is the configured simulator backend (None for tasks that need none); ``options`` is
        ``algorithm.infopo.env``. Raise ``ValueError`` naming the field when the row is malformed.
        """

    async def opening(self) -> list[dict[str, str]]:
        """Messages that open the dialogue before the agent's first turn, appended to the row's prompt (tau2-bench:
        the customer speaks first). None by default. May raise :class:`~infopo_verl.users.base.SimulatorFailure`."""
        return []

    @abstractmethod
    async def step(self, action: Action) -> StepResult:
        """Apply one agent action. May raise :class:`~infopo_verl.users.base.SimulatorFailure`."""

    @abstractmethod
    async def final_score(self) -> float:
        """The outcome R of the dialogue so far, in the task's own scale (UserRL: its final score)."""

    def task_metrics(self) -> Mapping[str, float]:
        """The family's task metrics (keys among :data:`TASK_METRIC_KEYS`), read after the dialogue ended (after
        ``final_score``, or after a simulator failure); recorded in the rollout record. Most families have none."""
        return {}
