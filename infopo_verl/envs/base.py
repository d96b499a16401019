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

    @abstractmethod
    async def step(self, action: Action) -> StepResult:
        """Apply one agent action. May raise :class:`~infopo_verl.users.base.SimulatorFailure`."""

    @abstractmethod
    async def final_score(self) -> float:
        """The outcome R of the dialogue so far, in the task's own scale (UserRL: its final score)."""
