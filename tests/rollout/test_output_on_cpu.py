"""The rm_scores layout helpers and the legacy-trainer wiring, reached the way verl reaches them."""

from __future__ import annotations

import pytest
import torch
from testkit.tiny import tiny_model_path
from verl.utils.import_utils import load_class_from_fqn

from infopo_verl.core.info_gain import information_gain, place_turn_rewards
from infopo_verl.local.pipeline import compose_config
from infopo_verl.rollout.output import (
    InfoPOAgentLoopManager,
    InfoPOAgentLoopWorker,
    ValidationFlag,
    turn_reward_entries,
)


def test_turn_reward_entries_are_raw_for_infopo_and_beta_scaled_otherwise():
    ends, gains = [3, 9, 15], [0.4, None, -0.2]
    assert turn_reward_entries(ends, gains, "infopo", beta=0.5) == [(3, 0.4), (15, -0.2)]
    assert turn_reward_entries(ends, gains, "gae", beta=0.5) == [(3, 0.2), (15, -0.1)]


def test_place_turn_rewards_adds_and_refuses_positions_outside_the_response():
    scores = torch.zeros(6)
    scores[-1] = 1.0  # the outcome, already written by verl
    place_turn_rewards(scores, [[1, 0.25], [3, -0.5]])
    assert scores.tolist() == [0.0, 0.25, 0.0, -0.5, 0.0, 1.0]
    with pytest.raises(ValueError, match="inside the response"):
        place_turn_rewards(torch.zeros(4), [[4, 1.0]])


def test_information_gain_is_the_mean_log_ratio():
    # ((-1.0 - -2.0) + (-0.5 - -0.5) + (-3.0 - -1.0)) / 3 = (1 + 0 - 2) / 3
    assert information_gain([-1.0, -0.5, -3.0], [-2.0, -0.5, -1.0]) == pytest.approx(-1 / 3)
    with pytest.raises(ValueError, match="same tokens"):
        information_gain([-1.0], [-1.0, -2.0])


def test_legacy_trainer_loads_the_manager_whose_workers_write_turn_rewards(tmp_path):
    model = tiny_model_path(tmp_path)
    fqn = "infopo_verl.rollout.output.InfoPOAgentLoopManager"
    config = compose_config(model, ["trainer.use_v1=false", f"actor_rollout_ref.rollout.agent.agent_loop_manager_class={fqn}"])
    # What verl's legacy RayPPOTrainer does with the key.
    manager = load_class_from_fqn(config.actor_rollout_ref.rollout.agent.get("agent_loop_manager_class"), "AgentLoopManager")
    assert manager is InfoPOAgentLoopManager
    worker = manager.agent_loop_workers_class.__ray_actor_class__
    assert worker is InfoPOAgentLoopWorker
    assert worker._run_agent_loop is ValidationFlag._run_agent_loop  # the loop learns verl's validate flag


def test_v1_trainer_loads_the_shipped_manager_whose_workers_pass_the_validate_flag(tmp_path):
    from verl.trainer.ppo.v1.agent_loop_tq import AgentLoopManagerTQ, AgentLoopWorkerTQ

    from infopo_verl.rollout.v1 import InfoPOAgentLoopManagerTQ, InfoPOAgentLoopWorkerTQ

    config = compose_config(tiny_model_path(tmp_path))  # infopo_trainer.yaml as shipped: v1 trainer
    assert config.trainer.use_v1 is True
    # What verl's TaskRunnerV1.init_agent_loop_manager does with the key (before create() starts the workers).
    manager_class = load_class_from_fqn(config.actor_rollout_ref.rollout.agent.agent_loop_manager_class, "AgentLoopManager")
    assert manager_class is InfoPOAgentLoopManagerTQ and issubclass(manager_class, AgentLoopManagerTQ)
    manager = manager_class(config=config, llm_client=None)
    worker = manager.agent_loop_workers_class.__ray_actor_class__
    assert worker is InfoPOAgentLoopWorkerTQ
    assert issubclass(worker, AgentLoopWorkerTQ.__ray_actor_class__)  # verl's TransferQueue worker, unchanged
    assert worker._run_agent_loop is ValidationFlag._run_agent_loop
