"""Refuse at start-up what cannot work, naming the key and the fix, in the process that starts training.

A configuration that cannot train InfoPO must stop before the first rollout, not train something else quietly:

- the legacy trainer (``trainer.use_v1=false``) without InfoPO's agent-loop manager: verl's own legacy manager
  never writes r_t into ``rm_scores``, so ``adv_estimator=infopo`` would silently train plain GRPO (and another
  estimator would lose its shaped reward beta * r_t; the GRPO baseline with ``info_gain=false`` has none);
- the legacy trainer with InfoPO's v1 manager (the shipped config's), and the v1 trainer with InfoPO's legacy
  manager: it stores rollouts as a padded batch, not in TransferQueue;
- the v1 trainer without InfoPO's v1 manager while information gain is measured and validation is not to be
  scored: only InfoPO's workers tell the loop which rollouts are validation (the loop would stop at its first
  rollout; refused here instead, before Ray starts);
- ``actor_rollout_ref.rollout.n < 2`` with ``adv_estimator=infopo``: every group statistic needs two rollouts;
- a v1 trainer mode whose server client drops ``prompt_logprobs`` while ``algorithm.infopo.info_gain`` is on: the
  scoring passes would come back empty (verl 0.9.1: ``colocate_async`` and ``separate_async`` use
  ``FullyAsyncLLMServerClient``, which rebuilds each ``TokenOutput`` without its ``extra_fields``).

Where the checks run (all call :func:`check_training_config`):

1. the driver, before Ray starts: :class:`StartupChecks`, a Hydra callback that ``infopo_trainer.yaml`` installs
   (``hydra.callbacks.infopo_startup``; with verl's stock config add
   ``+hydra.callbacks.infopo_startup._target_=infopo_verl.startup.StartupChecks``);
2. the TaskRunner: InfoPO's v1 trainer (``trainer.v1.trainer_mode=infopo_sync``) and legacy manager, when built;
3. verl's reward-loop workers, when the ``infopo`` reward manager is built: the backstop for a stock-config run
   without the callback (it stops the run at the first reward, before any update).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.experimental.callback import Callback

from infopo_verl.config import ConfigError, InfoPOConfig, refuse_kl_in_reward

__all__ = ["check_training_config", "StartupChecks", "LEGACY_MANAGER", "V1_MANAGER", "TRAINER_MODE", "PROMPT_LOGPROBS_DROPPED"]

LEGACY_MANAGER = "infopo_verl.rollout.output.InfoPOAgentLoopManager"
"""Fully qualified name of InfoPO's agent-loop manager for the legacy trainer."""

V1_MANAGER = "infopo_verl.rollout.v1.InfoPOAgentLoopManagerTQ"
"""Fully qualified name of InfoPO's agent-loop manager for the v1 trainer (set by ``infopo_trainer.yaml``)."""

TRAINER_MODE = "infopo_sync"
"""``trainer.v1.trainer_mode`` of verl's sync trainer plus InfoPO's per-step metrics (:mod:`infopo_verl.trainer`)."""

PROMPT_LOGPROBS_DROPPED = ("colocate_async", "separate_async")
"""v1 trainer modes whose LLM client drops ``prompt_logprobs`` (verl 0.9.1, ``FullyAsyncLLMServerClient``)."""

MANAGER_KEY = "actor_rollout_ref.rollout.agent.agent_loop_manager_class"


def _select(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if node is None or not hasattr(node, "get"):
            return default
        node = node.get(part, None)
    return default if node is None else node


def _uses_infopo(config: Mapping[str, Any]) -> bool:
    return (
        _select(config, "algorithm.adv_estimator") == "infopo"
        or _select(config, "reward.reward_manager.name") == "infopo"
        or _select(config, "actor_rollout_ref.rollout.agent.default_agent_loop") == "infopo_user"
    )


def _is_manager(fqn: str | None, expected: str) -> bool:
    """Whether ``fqn`` names the manager ``expected`` (a fully qualified name) or a subclass of it."""
    if not fqn:
        return False
    if fqn == expected:
        return True
    from verl.utils.import_utils import load_class_from_fqn

    try:
        manager = load_class_from_fqn(fqn, "AgentLoopManager")
    except Exception as error:  # noqa: BLE001 - the message below names the key; the cause stays chained
        raise ConfigError(f"{MANAGER_KEY}={fqn} cannot be imported: {error}") from error
    return isinstance(manager, type) and issubclass(manager, load_class_from_fqn(expected, "AgentLoopManager"))


def check_training_config(config: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` for a training config that cannot train InfoPO; do nothing for a run that uses
    none of InfoPO's components. ``config`` is the whole job config (a DictConfig or a nested dict)."""
    if not _uses_infopo(config):
        return
    algorithm = _select(config, "algorithm")
    infopo = InfoPOConfig.from_algorithm(algorithm)  # a misspelt or out-of-range algorithm.infopo key
    estimator = _select(config, "algorithm.adv_estimator")
    if estimator == "infopo":
        refuse_kl_in_reward(algorithm)
        n = _select(config, "actor_rollout_ref.rollout.n", 1)
        if int(n) < 2:
            raise ConfigError(
                f"actor_rollout_ref.rollout.n must be >= 2 for InfoPO's group statistics (got {n}): the outcome "
                "std, the gate and the turn pool are taken over the rollouts of one prompt. Set "
                "actor_rollout_ref.rollout.n=5 (every paper run) or at least 2."
            )

    manager = _select(config, MANAGER_KEY)
    if not _select(config, "trainer.use_v1", True):
        if _is_manager(manager, V1_MANAGER):
            raise ConfigError(
                f"{MANAGER_KEY}={manager} is InfoPO's manager for the v1 trainer (TransferQueue), but "
                f"trainer.use_v1=false selects the legacy trainer. Set {MANAGER_KEY}={LEGACY_MANAGER}, or "
                "trainer.use_v1=true."
            )
        # Without InfoPO's manager the turn rewards never reach rm_scores: refused whenever there are any (the
        # GRPO baseline, another estimator with info_gain off, has none to lose).
        if (estimator == "infopo" or infopo.info_gain) and not _is_manager(manager, LEGACY_MANAGER):
            raise ConfigError(
                f"trainer.use_v1=false (the legacy trainer) needs InfoPO's agent-loop manager, which writes the "
                f"per-turn rewards into rm_scores; without it every r_t is dropped and the run trains plain GRPO "
                f"(got {MANAGER_KEY}={manager}). Set {MANAGER_KEY}={LEGACY_MANAGER} (with a leading + on verl's "
                "stock config), or use the v1 trainer "
                "(trainer.use_v1=true)."
            )
        return

    if _is_manager(manager, LEGACY_MANAGER):
        raise ConfigError(
            f"{MANAGER_KEY}={manager} is InfoPO's manager for the legacy trainer (trainer.use_v1=false); the v1 "
            "trainer stores rollouts in TransferQueue through its own manager. "
            f"Set {MANAGER_KEY}={V1_MANAGER}, or trainer.use_v1=false."
        )
    loop = _select(config, "actor_rollout_ref.rollout.agent.default_agent_loop")
    if loop == "infopo_user" and infopo.info_gain and not infopo.scoring.validation and not _is_manager(manager, V1_MANAGER):
        raise ConfigError(
            f"the v1 trainer needs InfoPO's agent-loop manager to keep validation outcome-only: only its workers "
            f"tell the infopo_user loop which rollouts are validation (got {MANAGER_KEY}={manager}). Set "
            f"+{MANAGER_KEY}={V1_MANAGER} on verl's stock config (infopo_trainer.yaml sets it), or "
            "algorithm.infopo.scoring.validation=true "
            "to score validation on purpose."
        )
    mode = _select(config, "trainer.v1.trainer_mode", "sync")
    if mode in PROMPT_LOGPROBS_DROPPED and infopo.info_gain:
        raise ConfigError(
            f"trainer.v1.trainer_mode={mode} rolls out through verl's FullyAsyncLLMServerClient, which drops the "
            "prompt_logprobs that information-gain scoring reads, so every r_t would be missing. Use "
            f"trainer.v1.trainer_mode={TRAINER_MODE} (or sync), or set algorithm.infopo.info_gain=false for a "
            "run without information gain."
        )


class StartupChecks(Callback):
    """Hydra callback (``hydra.callbacks.<name>._target_=infopo_verl.startup.StartupChecks``): runs
    :func:`check_training_config` in the driver, after the config is composed and before ``main_ppo`` starts Ray.

    Hydra 1.3 turns an exception raised in a callback into a warning and runs the job anyway, so a refusal leaves
    as ``SystemExit`` (which Hydra does not catch): the process exits with status 1 and the message on stderr.
    """

    def on_job_start(self, config, **kwargs: Any) -> None:
        try:
            check_training_config(config)
        except ConfigError as error:
            raise SystemExit(f"infopo-verl refused the config: {error}") from error
