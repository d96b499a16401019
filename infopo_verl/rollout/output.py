"""How the rollout's per-turn values reach ``rm_scores`` (SPEC section 2), on both of verl's trainers.

verl hands an advantage estimator only ``token_level_rewards`` (= ``rm_scores``), so the turn rewards travel
inside it: r_t on the last token of agent turn t, the outcome R (written by verl from the reward manager's
score) on the last response token. With an estimator other than ``infopo`` the rollout records beta * r_t
instead, so any stock estimator (gae, reinforce_plus_plus, rloo, ...) sees a shaped reward.

- v1 trainer (default, ``trainer.use_v1=true``): verl stores ``AgentLoopOutput.as_dict()`` and builds
  ``rm_scores`` there; :class:`InfoPOAgentLoopOutput` adds the turn values right after.
- legacy trainer (``trainer.use_v1=false``): ``AgentLoopWorker._postprocess`` builds ``rm_scores`` for the padded
  batch; :class:`InfoPOAgentLoopWorker` adds the turn values after it. Select it with
  ``+actor_rollout_ref.rollout.agent.agent_loop_manager_class=infopo_verl.rollout.output.InfoPOAgentLoopManager``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ray
from verl.experimental.agent_loop.agent_loop import AgentLoopManager, AgentLoopOutput, AgentLoopWorker

from infopo_verl.core.info_gain import place_turn_rewards

RECORD_KEY = "infopo"
"""``extra_fields`` key of the rollout's record (becomes a ``non_tensor_batch`` column)."""


def turn_reward_entries(
    turn_ends: Sequence[int], info_gains: Sequence[float | None], estimator: str, beta: float
) -> list[list[float]]:
    """``[position, value]`` for every measured turn: raw r_t for ``infopo``, beta * r_t for any other estimator."""
    scale = 1.0 if estimator == "infopo" else beta
    return [[int(end), scale * gain] for end, gain in zip(turn_ends, info_gains, strict=True) if gain is not None]


class InfoPOAgentLoopOutput(AgentLoopOutput):
    """``AgentLoopOutput`` whose ``as_dict()`` (the v1 trainer's path) also writes the turn rewards."""

    def as_dict(self) -> dict[str, Any]:
        output = super().as_dict()
        record = self.extra_fields.get(RECORD_KEY)
        if "rm_scores" in output and record:
            place_turn_rewards(output["rm_scores"], record["turn_rewards"])
        return output


class InfoPOAgentLoopWorker(AgentLoopWorker):
    """``AgentLoopWorker`` whose ``_postprocess`` (the legacy trainer's path) also writes the turn rewards."""

    def _postprocess(self, inputs, input_non_tensor_batch=None, validate=False):
        batch = super()._postprocess(inputs, input_non_tensor_batch=input_non_tensor_batch, validate=validate)
        if "rm_scores" in batch.batch.keys():
            for row, item in enumerate(inputs):
                record = item.extra_fields.get(RECORD_KEY)
                if record:
                    place_turn_rewards(batch.batch["rm_scores"][row], record["turn_rewards"])
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
