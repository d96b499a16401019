"""InfoPO's agent-loop manager for verl's v1 trainer (``trainer.use_v1=true``, the default).

verl's v1 trainer builds ``AgentLoopManagerTQ``, whose ``AgentLoopWorkerTQ`` writes every finished dialogue to
TransferQueue, unless ``actor_rollout_ref.rollout.agent.agent_loop_manager_class`` names another manager. The
shipped ``infopo_trainer.yaml`` names :class:`InfoPOAgentLoopManagerTQ`: verl's own worker and manager, plus
:class:`~infopo_verl.rollout.output.ValidationFlag`, so the loop knows which rollouts are validation. The turn
rewards reach ``rm_scores`` through ``InfoPOAgentLoopOutput.as_dict`` on this path, as with verl's own worker.

Its own module because importing verl's v1 package loads the whole v1 trainer, which the legacy path and the
pure-Python parts of the plugin never need.
"""

from __future__ import annotations

import ray
from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ

from infopo_verl.rollout.output import ValidationFlag

__all__ = ["InfoPOAgentLoopManagerTQ", "InfoPOAgentLoopWorkerTQ"]


class InfoPOAgentLoopWorkerTQ(ValidationFlag, AgentLoopWorkerTQ.__ray_actor_class__):
    """verl's v1 (TransferQueue) agent-loop worker that tells the loop verl's validate flag."""


class InfoPOAgentLoopManagerTQ(AgentLoopManagerTQ):
    """verl's v1 agent-loop manager whose workers are :class:`InfoPOAgentLoopWorkerTQ`."""

    def __init__(self, config, *args, **kwargs):
        from infopo_verl.startup import check_training_config

        check_training_config(config)  # the TaskRunner builds this manager before the first rollout
        super().__init__(config, *args, **kwargs)
        # AgentLoopManagerTQ.__init__ assigns its own worker class; the workers are created later, in create().
        self.agent_loop_workers_class = ray.remote(InfoPOAgentLoopWorkerTQ)
