"""How the rollout's per-turn values reach ``rm_scores`` (SPEC section 2), on both of verl's trainers.

verl hands an advantage estimator only ``token_level_rewards`` (= ``rm_scores``), so the turn rewards travel
inside it: r_t on the last token of agent turn t, the outcome R (written by verl from the reward manager's
score) on the last response token. With an estimator other than ``infopo`` the rollout records beta * r_t
instead, so any stock estimator (gae, reinforce_plus_plus, rloo, ...) sees a shaped reward.

- v1 trainer (default, ``trainer.use_v1=true``): verl stores ``AgentLoopOutput.as_dict()`` and builds
  ``rm_scores`` there; :class:`InfoPOAgentLoopOutput` adds the turn values right after.
- legacy trainer (``trainer.use_v1=false``): ``AgentLoopWorker._postprocess`` builds ``rm_scores`` for the padded
  batch; :class:`InfoPOAgentLoopWorker` adds the turn values after it. Select it with
  ``actor_rollout_ref.rollout.agent.agent_loop_manager_class=infopo_verl.rollout.output.InfoPOAgentLoopManager``
  (with a leading ``+`` on verl's stock config).

Validation is outcome-only (``algorithm.infopo.scoring.validation``), which needs the loop to know whether verl
runs it for validation. verl passes that flag only to ``AgentLoopWorker._run_agent_loop`` (v1:
``trajectory["validate"]``; legacy: from ``meta_info["validate"]``), never to the loop itself, and both trainers
build their workers through one config hook, ``actor_rollout_ref.rollout.agent.agent_loop_manager_class``. So
InfoPO's workers (:class:`ValidationFlag` mixed into the legacy worker here and into verl's v1 worker in
:mod:`infopo_verl.rollout.v1`) set :data:`VALIDATING`, a context variable, around each loop; every asyncio task
the loop starts inherits it. A loop run by any other worker finds it unset and refuses to guess.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from typing import Any

import ray
from verl.experimental.agent_loop.agent_loop import AgentLoopManager, AgentLoopOutput, AgentLoopWorker

from infopo_verl.core.info_gain import place_turn_rewards
from infopo_verl.rollout.record import RECORD_KEY, RolloutRecord

__all__ = [
    "RECORD_KEY",
    "VALIDATING",
    "InfoPOAgentLoopManager",
    "InfoPOAgentLoopOutput",
    "InfoPOAgentLoopWorker",
    "ValidationFlag",
    "turn_reward_entries",
]

VALIDATING: contextvars.ContextVar[bool | None] = contextvars.ContextVar("infopo_validating", default=None)
"""verl's ``validate`` flag for the agent loop running in this context; None when no InfoPO worker set it."""


def turn_reward_entries(
    turn_ends: Sequence[int], info_gains: Sequence[float | None], estimator: str, beta: float
) -> list[tuple[int, float]]:
    """``(position, value)`` for every measured turn: raw r_t for ``infopo``, beta * r_t for any other estimator."""
    scale = 1.0 if estimator == "infopo" else beta
    return [(int(end), scale * gain) for end, gain in zip(turn_ends, info_gains, strict=True) if gain is not None]


class InfoPOAgentLoopOutput(AgentLoopOutput):
    """``AgentLoopOutput`` whose ``as_dict()`` (the v1 trainer's path) also writes the turn rewards."""

    def as_dict(self) -> dict[str, Any]:
        output = super().as_dict()
        record = RolloutRecord.from_extra_fields(self.extra_fields)
        if record is not None:
            # model_dump turned the record into a dict: keep the typed record in what the trainer stores.
            output["extra_fields"][RECORD_KEY] = record
            if "rm_scores" in output:
                place_turn_rewards(output["rm_scores"], record.turn_rewards)
        return output


class ValidationFlag:
    """Worker mixin: sets :data:`VALIDATING` to verl's ``validate`` flag while one agent loop runs."""

    async def _run_agent_loop(self, sampling_params, trajectory, *args, **kwargs):
        token = VALIDATING.set(bool(trajectory["validate"]))
        try:
            return await super()._run_agent_loop(sampling_params, trajectory, *args, **kwargs)
        finally:
            VALIDATING.reset(token)


class InfoPOAgentLoopWorker(ValidationFlag, AgentLoopWorker):
    """Legacy-trainer worker: tells the loop verl's validate flag; its ``_postprocess`` writes the turn rewards."""

    def _postprocess(self, inputs, input_non_tensor_batch=None, validate=False):
        batch = super()._postprocess(inputs, input_non_tensor_batch=input_non_tensor_batch, validate=validate)
        if "rm_scores" in batch.batch.keys():
            for row, item in enumerate(inputs):
                record = RolloutRecord.from_extra_fields(item.extra_fields)
                if record is not None:
                    place_turn_rewards(batch.batch["rm_scores"][row], record.turn_rewards)
        return batch


class InfoPOAgentLoopManager(AgentLoopManager):
    """Legacy-trainer agent loop manager whose workers are :class:`InfoPOAgentLoopWorker`.

    The legacy trainer builds it in its own process before the first step: it refuses a config that cannot work
    and routes InfoPO's per-step metrics into the trainer's tracker (:mod:`infopo_verl.trainer`).
    """

    agent_loop_workers_class = ray.remote(InfoPOAgentLoopWorker)

    def __init__(self, config, *args, **kwargs):
        from infopo_verl.startup import check_training_config
        from infopo_verl.trainer import install_legacy_step_metrics

        check_training_config(config)
        install_legacy_step_metrics(config.algorithm)
        super().__init__(config, *args, **kwargs)
