"""The one module that registers InfoPO with verl. verl imports it through the ``verl.plugins`` entry point.

``import verl`` loads every ``verl.plugins`` entry point in every process (driver, TaskRunner, agent-loop and
reward-loop workers), so registering here makes the names below resolvable everywhere from config alone:

- ``algorithm.adv_estimator=infopo``                                 -> :func:`infopo_verl.estimator.compute_infopo_advantage`

verl swallows exceptions raised here (logged at DEBUG), so a broken plugin silently disappears:
``infopo-verl doctor`` imports this module itself and shows the real traceback.
"""

from verl.trainer.ppo.core_algos import register_adv_est

from infopo_verl.estimator import compute_infopo_advantage

ESTIMATOR_NAME = "infopo"

register_adv_est(ESTIMATOR_NAME)(compute_infopo_advantage)
