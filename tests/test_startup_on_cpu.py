"""Configs that cannot train InfoPO are refused at start-up, naming the key, by the process that starts training.

The strongest evidence first: ``python -m verl.trainer.main_ppo`` in a real subprocess, with the shipped
``infopo_trainer.yaml`` (and once with verl's stock config plus the documented callback override), exits non-zero
with the message before Ray starts (verl prints ``ray init kwargs`` when it does). Then the TaskRunner-side paths
(InfoPO's v1 trainer and legacy manager, as verl builds them) and the reward-worker backstop refuse the same
configs, and a config that can work passes every check.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from testkit.tiny import tiny_model_path
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
from verl.trainer.ppo.v1 import get_trainer_cls
from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, PPOTrainer

from infopo_verl.config import ConfigError
from infopo_verl.local.pipeline import compose_config
from infopo_verl.rollout.output import InfoPOAgentLoopManager
from infopo_verl.startup import LEGACY_MANAGER, PROMPT_LOGPROBS_DROPPED, check_training_config
from infopo_verl.trainer import InfoPOSyncTrainer

MANAGER = "actor_rollout_ref.rollout.agent.agent_loop_manager_class"
SHIPPED = ["--config-path=pkg://infopo_verl.hydra_configs", "--config-name=infopo_trainer"]

# (overrides on the shipped config, the key the message must name)
REFUSED = {
    "legacy-trainer-without-infopo-manager": (["trainer.use_v1=false"], MANAGER),
    "v1-trainer-with-legacy-manager": ([f"{MANAGER}={LEGACY_MANAGER}"], MANAGER),
    "legacy-trainer-with-v1-manager": (["trainer.use_v1=false", "algorithm.adv_estimator=grpo",
                                        "algorithm.infopo.info_gain=false"], MANAGER),
    "v1-trainer-without-infopo-v1-manager": ([f"{MANAGER}=null"], MANAGER),
    "rollout-n-below-2": (["actor_rollout_ref.rollout.n=1"], "actor_rollout_ref.rollout.n"),
    "async-mode-drops-prompt-logprobs": (["trainer.v1.trainer_mode=colocate_async"], "trainer.v1.trainer_mode"),
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return tiny_model_path(tmp_path_factory.mktemp("tiny"))


def main_ppo(arguments: list[str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", *arguments],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )


@pytest.mark.parametrize("case", list(REFUSED), ids=str)
def test_main_ppo_refuses_before_ray_starts(case, model_dir, tmp_path):
    overrides, key = REFUSED[case]
    result = main_ppo([*SHIPPED, f"actor_rollout_ref.model.path={model_dir}", *overrides], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "infopo-verl refused the config" in output and key in output, output[-3000:]
    assert "ray init kwargs" not in output  # refused in the driver, before verl started Ray


def test_main_ppo_with_stock_config_and_the_documented_callback_override(model_dir, tmp_path):
    result = main_ppo(
        [
            f"actor_rollout_ref.model.path={model_dir}",
            "algorithm.adv_estimator=infopo",
            "reward.reward_manager.name=infopo",
            "actor_rollout_ref.rollout.agent.default_agent_loop=infopo_user",
            "actor_rollout_ref.rollout.n=1",
            "+hydra.callbacks.infopo_startup._target_=infopo_verl.startup.StartupChecks",
        ],
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "actor_rollout_ref.rollout.n must be >= 2" in output, output[-3000:]
    assert "ray init kwargs" not in output


@pytest.mark.parametrize("case", list(REFUSED), ids=str)
def test_taskrunner_and_reward_worker_refuse_the_same_configs(case, model_dir):
    overrides, key = REFUSED[case]
    config = compose_config(model_dir, overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_training_config(config)
    # The TaskRunner builds InfoPO's v1 trainer (the shipped trainer_mode) or legacy manager before the first
    # rollout; with an async mode it builds verl's own trainer, so there only the driver and the backstop refuse.
    if case != "async-mode-drops-prompt-logprobs":
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            if config.trainer.use_v1:
                InfoPOSyncTrainer(config)
            else:
                InfoPOAgentLoopManager(config=config, llm_client=None)
    # The backstop in verl's reward-loop worker (a stock-config run without the callback).
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        RewardLoopWorker(config)


def test_configs_that_can_work_pass_every_check(model_dir):
    for overrides in (
        [],
        ["trainer.v1.trainer_mode=sync"],
        ["trainer.use_v1=false", f"{MANAGER}={LEGACY_MANAGER}"],
        # Validation scored on purpose needs no validate flag, so no InfoPO manager.
        [f"{MANAGER}=null", "algorithm.infopo.scoring.validation=true"],
        ["trainer.v1.trainer_mode=colocate_async", "algorithm.infopo.info_gain=false"],
        # The GRPO baseline on the legacy trainer: no turn rewards to lose, so verl's own manager is fine.
        ["trainer.use_v1=false", "algorithm.adv_estimator=grpo", "algorithm.infopo.info_gain=false", f"{MANAGER}=null"],
    ):
        check_training_config(compose_config(model_dir, overrides))
    # A run that uses none of InfoPO's components is none of InfoPO's business.
    check_training_config(
        compose_config(
            model_dir,
            [
                "algorithm.adv_estimator=grpo",
                "reward.reward_manager.name=naive",
                "actor_rollout_ref.rollout.agent.default_agent_loop=single_turn_agent",
                "actor_rollout_ref.rollout.n=1",
                "trainer.use_v1=false",
            ],
        )
    )


def test_the_async_modes_refused_are_exactly_verls_modes_with_another_llm_client():
    """verl 0.9.1: a trainer mode overriding ``get_llm_client`` rolls out through FullyAsyncLLMServerClient."""
    overriding = {name for name, cls in TRAINER_REGISTRY.items() if cls.get_llm_client is not PPOTrainer.get_llm_client}
    assert overriding == set(PROMPT_LOGPROBS_DROPPED)
    assert get_trainer_cls("infopo_sync") is InfoPOSyncTrainer
