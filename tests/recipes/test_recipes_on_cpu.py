"""The recipes, the shipped trainer config and docs/configuration.md, checked on CPU with real Hydra and real verl.

Every recipe runs as a user runs it (``bash recipes/<name>.sh`` in a subprocess, this venv's python first on PATH)
with ``DRY_RUN=1``: verl's ``main_ppo`` composes the job config, prints it (``--cfg job``) and exits before Ray.
The printed config is then checked for the paper's values, validated by verl's own ``validate_config`` (the check
``main_ppo`` runs before starting Ray) and by InfoPO's config boundary. Each compose takes a few seconds, so every
command is composed once per session and shared by the tests.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from omegaconf import DictConfig, OmegaConf

from infopo_verl.config import InfoPOConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPES_DIR = REPO_ROOT / "recipes"
CONFIG_DIR = REPO_ROOT / "hydra_configs"
CONFIGURATION_DOC = REPO_ROOT / "docs" / "configuration.md"

# The three names that select InfoPO's components (SPEC section 2).
COMPONENTS = {
    "algorithm.adv_estimator": "infopo",
    "reward.reward_manager.name": "infopo",
    "actor_rollout_ref.rollout.agent.default_agent_loop": "infopo_user",
}
V1_MANAGER = "infopo_verl.rollout.v1.InfoPOAgentLoopManagerTQ"
"""InfoPO's agent-loop manager for verl's v1 trainer, set by infopo_trainer.yaml."""

# The paper's UserGym settings (SPEC section 1), shared by the InfoPO run and its GRPO baseline.
USERGYM = {
    "algorithm.infopo.beta": 0.5,
    "algorithm.infopo.gate_temperature": 0.5,
    "algorithm.infopo.normalization": "token",
    "algorithm.infopo.magnitude_bound": True,
    "algorithm.infopo.max_tokens_per_turn": 1024,
    "algorithm.infopo.user.backend": "openai",
    "algorithm.infopo.user.model": "gpt-4o-mini",
    "algorithm.infopo.user.api_key_env": "OPENAI_API_KEY",
    "algorithm.use_kl_in_reward": False,
    "actor_rollout_ref.actor.optim.lr": 3e-7,
    "data.train_batch_size": 64,
    "actor_rollout_ref.rollout.n": 5,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 16,
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns": 16,
    "data.max_prompt_length": 1152,
    "data.max_response_length": 8192,
    "trainer.total_epochs": 5,
    "actor_rollout_ref.actor.clip_ratio": 0.2,
    "actor_rollout_ref.actor.clip_ratio_low": 0.2,
    "actor_rollout_ref.actor.clip_ratio_high": 0.2,
    "actor_rollout_ref.actor.clip_ratio_c": 3.0,
    "actor_rollout_ref.actor.loss_agg_mode": "token-mean",
    "actor_rollout_ref.actor.ppo_epochs": 1,
    "actor_rollout_ref.actor.entropy_coeff": 0.001,
    "actor_rollout_ref.actor.use_kl_loss": False,
    "actor_rollout_ref.actor.grad_clip": 1.0,
    "actor_rollout_ref.rollout.temperature": 1.0,
    "trainer.n_gpus_per_node": 4,
    "actor_rollout_ref.model.path": "Qwen/Qwen2.5-7B-Instruct",
}

# The paper's ColBench settings (SPEC section 1), shared by the InfoPO run and its GRPO baseline.
COLBENCH = {
    **{key: value for key, value in USERGYM.items() if key.startswith(("actor_rollout_ref.actor.", "algorithm.use_"))},
    "algorithm.infopo.beta": 0.3,
    "algorithm.infopo.gate_temperature": 0.5,
    "algorithm.infopo.normalization": "token",
    "algorithm.infopo.magnitude_bound": True,
    "algorithm.infopo.max_tokens_per_turn": 1024,
    "algorithm.infopo.user.backend": "openai",
    "algorithm.infopo.user.model": "gpt-4o-mini",
    "algorithm.infopo.user.temperature": 0.0,
    "algorithm.infopo.env.colbench_isolation": "namespaces",
    "actor_rollout_ref.actor.optim.lr": 3e-7,
    "data.train_batch_size": 64,
    "actor_rollout_ref.rollout.n": 5,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 16,
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns": 10,
    "data.max_prompt_length": 2048,
    "data.max_response_length": 8192,
    "trainer.total_epochs": 3,
    "actor_rollout_ref.rollout.temperature": 0.6,
    "trainer.n_gpus_per_node": 4,
    "actor_rollout_ref.model.path": "Qwen/Qwen2.5-7B-Instruct",
}

# recipe file -> expected values of its composed config (dotted keys).
RECIPES = {
    "quickstart_clarify.sh": {
        **COMPONENTS,
        "algorithm.infopo.info_gain": True,
        "algorithm.infopo.user.backend": "scripted",
        "trainer.n_gpus_per_node": 1,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": 1,
        "actor_rollout_ref.rollout.n": 5,
        "actor_rollout_ref.model.path": "Qwen/Qwen2.5-0.5B-Instruct",
    },
    "colbench_infopo.sh": {**COMPONENTS, **COLBENCH, "algorithm.infopo.info_gain": True},
    "colbench_grpo.sh": {
        **COMPONENTS,
        **COLBENCH,
        "algorithm.adv_estimator": "grpo",
        "algorithm.infopo.info_gain": False,
    },
    "usergym_infopo.sh": {**COMPONENTS, **USERGYM, "algorithm.infopo.info_gain": True},
    "usergym_grpo.sh": {
        **COMPONENTS,
        **USERGYM,
        "algorithm.adv_estimator": "grpo",
        "algorithm.infopo.info_gain": False,
    },
}

# The only keys in which the InfoPO run and its GRPO baseline may differ.
USERGYM_DIFFERENCE = {"algorithm.adv_estimator", "algorithm.infopo.info_gain", "trainer.experiment_name"}

# ---- tau2-bench: the paper's settings (SPEC section 1), shared by its InfoPO run and GRPO baseline ----
TAU2 = {
    **{key: value for key, value in USERGYM.items() if not key.startswith(("algorithm.infopo.beta",
                                                                           "algorithm.infopo.gate_temperature"))},
    "algorithm.infopo.beta": 0.1,
    "algorithm.infopo.gate_temperature": 0.05,
    "actor_rollout_ref.actor.optim.lr": 1e-6,
    "data.train_batch_size": 32,
    "actor_rollout_ref.rollout.n": 5,
    "actor_rollout_ref.actor.ppo_mini_batch_size": 16,
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns": 50,
    "algorithm.infopo.max_tokens_per_turn": 1024,
    "data.max_prompt_length": 8192,
    "data.max_response_length": 16384,
    "trainer.total_epochs": 10,
    "algorithm.infopo.user.temperature": 0.7,  # training customer (the reference code's gym); evaluation uses 0
}
RECIPES.update({
    "tau2_infopo.sh": {**COMPONENTS, **TAU2, "algorithm.infopo.info_gain": True},
    "tau2_grpo.sh": {**COMPONENTS, **TAU2, "algorithm.adv_estimator": "grpo", "algorithm.infopo.info_gain": False},
})


def _subprocess_env(**extra: str) -> dict[str, str]:
    """A clean environment: this venv first on PATH, and none of the caller's recipe knobs or API keys."""
    return {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HOME": os.environ.get("HOME", str(REPO_ROOT)),
        "PYTHONWARNINGS": "ignore",
        **extra,
    }


def _parse_job_config(completed: subprocess.CompletedProcess, command: str) -> DictConfig:
    assert completed.returncode == 0, f"{command} failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}"
    return OmegaConf.create(completed.stdout)


@functools.cache
def dry_run(recipe: str) -> DictConfig:
    """The job config that ``DRY_RUN=1 bash recipes/<recipe>`` prints, run from an empty working directory."""
    workdir = REPO_ROOT / ".cache" / "recipes-dry-run"  # a dry run writes nothing; DATA_DIR resolves against it
    workdir.mkdir(parents=True, exist_ok=True)
    completed = subprocess.run(
        ["bash", str(RECIPES_DIR / recipe)],
        cwd=workdir,
        env=_subprocess_env(DRY_RUN="1"),
        capture_output=True,
        text=True,
        check=False,
    )
    return _parse_job_config(completed, f"DRY_RUN=1 bash recipes/{recipe}")


@functools.cache
def compose(*arguments: str) -> DictConfig:
    """``python -m verl.trainer.main_ppo --cfg job <arguments>``: verl's own entry point, stopped after composing."""
    command = [sys.executable, "-m", "verl.trainer.main_ppo", "--cfg", "job", *arguments]
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=_subprocess_env(), capture_output=True, text=True, check=False
    )
    return _parse_job_config(completed, " ".join(command))


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": leaf}`` for every leaf of a config, interpolations kept as their ``${...}`` text."""
    if isinstance(node, DictConfig):
        node = OmegaConf.to_container(node, resolve=False)
    if not isinstance(node, dict) or not node:
        return {prefix: node}
    flat = {}
    for key, child in node.items():
        flat.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def assert_valid_for_verl(config: DictConfig) -> None:
    """The checks ``main_ppo`` runs before Ray (batch sizes, micro-batches, actor config), plus InfoPO's own."""
    from verl.trainer.ppo.utils import need_critic, need_reference_policy
    from verl.utils.config import validate_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # need_critic warns that a non-GAE estimator disables the critic
        validate_config(config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    InfoPOConfig.from_algorithm(config.algorithm)


def recipe_files() -> list[str]:
    """Every runnable recipe; files starting with ``_`` are sourced helpers."""
    return sorted(path.name for path in RECIPES_DIR.glob("*.sh") if not path.name.startswith("_"))


def test_every_recipe_has_expectations():
    assert recipe_files() == sorted(RECIPES), "a recipe was added or removed: update RECIPES in this test"


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_dry_run_composes_the_expected_config(recipe):
    config = dry_run(recipe)
    wrong = {
        key: (OmegaConf.select(config, key, default="<missing>"), expected)
        for key, expected in RECIPES[recipe].items()
        if OmegaConf.select(config, key, default="<missing>") != expected
    }
    assert not wrong, f"recipes/{recipe}: key -> (composed, expected): {wrong}"
    assert_valid_for_verl(config)


@pytest.mark.parametrize("benchmark", ["usergym", "tau2"])
def test_infopo_and_grpo_runs_differ_only_in_estimator_and_info_gain(benchmark):
    infopo = flatten(dry_run(f"{benchmark}_infopo.sh"))
    grpo = flatten(dry_run(f"{benchmark}_grpo.sh"))
    assert infopo.keys() == grpo.keys()
    differing = {key for key in infopo if infopo[key] != grpo[key]}
    assert differing == USERGYM_DIFFERENCE, {key: (infopo[key], grpo[key]) for key in differing}
    assert infopo["data.train_files"].endswith(f"data/{'userrl' if benchmark == 'usergym' else 'tau2'}/train.parquet")


def test_colbench_infopo_and_grpo_differ_only_in_estimator_and_info_gain():
    infopo = flatten(dry_run("colbench_infopo.sh"))
    grpo = flatten(dry_run("colbench_grpo.sh"))
    assert infopo.keys() == grpo.keys()
    differing = {key for key in infopo if infopo[key] != grpo[key]}
    assert differing == USERGYM_DIFFERENCE, {key: (infopo[key], grpo[key]) for key in differing}
    assert dry_run("colbench_infopo.sh").data.train_files.endswith("data/colbench/train.parquet")


def test_usergym_empty_user_base_url_becomes_null():
    # An empty USER_BASE_URL must reach the config as null (the client's default endpoint), not as "".
    assert dry_run("usergym_infopo.sh").algorithm.infopo.user.base_url is None


def _infopo_section_as_dict(config: DictConfig) -> dict[str, Any]:
    section = OmegaConf.to_container(config.algorithm.infopo, resolve=True)
    assert isinstance(section, dict)
    return section


@pytest.mark.parametrize("config_path", [str(CONFIG_DIR), "pkg://infopo_verl.hydra_configs"])
def test_trainer_config_composes_with_every_infopo_default(config_path):
    config = compose(f"--config-path={config_path}", "--config-name=infopo_trainer")
    for key, expected in COMPONENTS.items():
        assert OmegaConf.select(config, key) == expected, key
    assert config.data.return_raw_chat is True
    assert config.actor_rollout_ref.rollout.mode == "async"
    assert config.actor_rollout_ref.rollout.multi_turn.enable is True
    assert config.reward.reward_model.enable is False
    assert config.actor_rollout_ref.rollout.n >= 2
    # InfoPO's manager for the default (v1) trainer, so validation rollouts are known to the loop.
    assert config.actor_rollout_ref.rollout.agent.agent_loop_manager_class == V1_MANAGER

    # Every dataclass field is written out, with the dataclass default: yaml, code and docs say the same thing.
    section = _infopo_section_as_dict(config)
    defaults = dataclasses.asdict(InfoPOConfig())
    defaults.pop("norm_adv_by_std_in_grpo")  # a verl key (algorithm.norm_adv_by_std_in_grpo), not under infopo
    assert section == defaults
    assert InfoPOConfig.from_algorithm(config.algorithm) == InfoPOConfig()
    assert_valid_for_verl(config)


def test_both_config_paths_compose_the_same_config():
    from_checkout = compose(f"--config-path={CONFIG_DIR}", "--config-name=infopo_trainer")
    from_package = compose("--config-path=pkg://infopo_verl.hydra_configs", "--config-name=infopo_trainer")
    assert flatten(from_checkout) == flatten(from_package)


def test_plain_overrides_on_verls_stock_config():
    config = compose(
        *(f"{key}={value}" for key, value in COMPONENTS.items()),
        "+algorithm.infopo.beta=0.3",
        "+algorithm.infopo.normalization=token",
        "+algorithm.infopo.user.backend=openai",
        "+algorithm.infopo.env.travel_db_path=travel.db",
        "+algorithm.infopo.scoring.env_errors=false",
        "+algorithm.infopo.train_on_failures=true",
        f"+actor_rollout_ref.rollout.agent.agent_loop_manager_class={V1_MANAGER}",
    )
    for key, expected in COMPONENTS.items():
        assert OmegaConf.select(config, key) == expected, key
    assert config.actor_rollout_ref.rollout.agent.agent_loop_manager_class == V1_MANAGER
    infopo = InfoPOConfig.from_algorithm(config.algorithm)
    assert (infopo.scoring.env_errors, infopo.scoring.validation, infopo.train_on_failures) == (False, False, True)
    assert (infopo.beta, infopo.normalization, infopo.user.backend) == (0.3, "token", "openai")
    assert infopo.env == {"travel_db_path": "travel.db"}
    assert infopo.gate_temperature == InfoPOConfig().gate_temperature  # keys left out keep their defaults


# ---- docs/configuration.md ----


def _yaml_literal(value: Any) -> str:
    """How the docs table writes a default: YAML spelling (true, null, quoted strings)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, (str, dict)):
        return json.dumps(value)
    return repr(value)


def documented_defaults() -> dict[str, str]:
    """``{"algorithm.infopo.<key>": "<default cell>"}`` from the docs' ``algorithm.infopo`` table."""
    row = re.compile(r"^\|\s*`(algorithm\.infopo\.[\w.]+)`\s*\|\s*`([^`]*)`\s*\|", re.MULTILINE)
    return {key: default for key, default in row.findall(CONFIGURATION_DOC.read_text(encoding="utf-8"))}


def code_defaults() -> dict[str, str]:
    """The same mapping from the dataclasses in infopo_verl/config.py (nested sections flattened)."""

    def walk(instance: Any, prefix: str) -> dict[str, str]:
        out = {}
        for field in dataclasses.fields(instance):
            if field.name == "norm_adv_by_std_in_grpo":
                continue  # verl's key, documented in the verl-keys table
            value = getattr(instance, field.name)
            if dataclasses.is_dataclass(value):  # a nested section: user, scoring
                out.update(walk(value, f"{prefix}.{field.name}"))
            else:
                out[f"{prefix}.{field.name}"] = _yaml_literal(value)
        return out

    return walk(InfoPOConfig(), "algorithm.infopo")


def test_configuration_doc_lists_every_key_with_its_code_default():
    assert documented_defaults() == code_defaults()
