"""The one module that registers InfoPO with verl. verl imports it through the ``verl.plugins`` entry point.

``import verl`` loads every ``verl.plugins`` entry point in every process (driver, TaskRunner, agent-loop and
reward-loop workers), so registering here makes the three names resolvable everywhere from config alone:

- ``algorithm.adv_estimator=infopo``                        -> :func:`infopo_verl.estimator.compute_infopo_advantage`
- ``reward.reward_manager.name=infopo``                      -> :class:`infopo_verl.reward_manager.InfoPORewardManager`
- ``actor_rollout_ref.rollout.agent.default_agent_loop=infopo_user``
                                                             -> :class:`infopo_verl.rollout.agent_loop.InfoPOUserAgentLoop`
- ``trainer.v1.trainer_mode=infopo_sync``                    -> :class:`infopo_verl.trainer.InfoPOSyncTrainer`
  (verl's sync trainer plus the per-step ``infopo/*`` metrics)

verl swallows exceptions raised here (logged at DEBUG), so a broken plugin silently disappears:
``infopo-verl doctor`` imports this module itself and shows the real traceback.
"""

from verl.experimental.agent_loop.agent_loop import register as register_agent_loop
from verl.experimental.reward_loop.reward_manager import register as register_reward_manager
from verl.trainer.ppo.core_algos import register_adv_est
from verl.trainer.ppo.v1 import register_trainer

from infopo_verl.estimator import compute_infopo_advantage
from infopo_verl.reward_manager import REWARD_MANAGER_NAME, InfoPORewardManager
from infopo_verl.rollout.agent_loop import AGENT_LOOP_NAME, InfoPOUserAgentLoop
from infopo_verl.trainer import TRAINER_MODE, InfoPOSyncTrainer

ESTIMATOR_NAME = "infopo"

register_adv_est(ESTIMATOR_NAME)(compute_infopo_advantage)
register_reward_manager(REWARD_MANAGER_NAME)(InfoPORewardManager)
register_agent_loop(AGENT_LOOP_NAME)(InfoPOUserAgentLoop)
register_trainer(TRAINER_MODE)(InfoPOSyncTrainer)
