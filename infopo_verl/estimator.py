"""verl glue for the ``infopo`` advantage estimator: read ``algorithm``, call the math, return what verl expects.

verl calls a registered estimator with ``token_level_rewards, response_mask, config (= algorithm), index (= uid)``
and nothing else (``gamma``/``lam``/``norm_adv_by_std_in_grpo`` are not passed: they are read from ``config``).
The math lives in :mod:`infopo_verl.core.advantage`; this module owns only the config boundary.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from infopo_verl.config import InfoPOConfig, refuse_kl_in_reward
from infopo_verl.core.advantage import AdvantageBreakdown, group_ids_from_index, infopo_advantages

__all__ = ["compute_infopo_advantage", "breakdown_from_config"]


def breakdown_from_config(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    algorithm: Mapping[str, Any] | None,
) -> AdvantageBreakdown:
    """The full :class:`AdvantageBreakdown` for verl's inputs and ``algorithm`` config (used by metrics and demo)."""
    refuse_kl_in_reward(algorithm)
    config = InfoPOConfig.from_algorithm(algorithm)
    if index is None:
        raise ValueError(
            "the infopo estimator needs group ids: the batch has no non_tensor_batch['uid'] "
            "(verl adds it when actor_rollout_ref.rollout.n >= 1 in the trainer)"
        )
    if len(index) != token_level_rewards.shape[0]:
        raise ValueError(f"index has {len(index)} entries for a batch of {token_level_rewards.shape[0]} rows")
    return infopo_advantages(
        token_level_rewards,
        response_mask,
        group_ids_from_index(index),
        beta=config.beta,
        gate_temperature=config.gate_temperature,
        normalization=config.normalization,
        magnitude_bound=config.magnitude_bound,
        gate=config.gate,
        intrinsic_only=config.intrinsic_only,
        eps=config.eps,
        norm_by_std=config.norm_adv_by_std_in_grpo,
    )


def compute_infopo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray | None = None,
    config: Mapping[str, Any] | None = None,
    **unused: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoPO's variance-gated advantage (SPEC section 1), registered as ``algorithm.adv_estimator=infopo``.

    Args:
        token_level_rewards: (bs, response_length) ``rm_scores`` in the SPEC section 2 layout.
        response_mask: (bs, response_length).
        index: (bs,) verl ``uid`` of each row's prompt group.
        config: verl's ``algorithm`` section; InfoPO reads ``algorithm.infopo`` and ``norm_adv_by_std_in_grpo``.
        unused: other keyword arguments verl may pass (``reward_baselines``), ignored.

    Returns:
        advantages, returns: both (bs, response_length), equal, as in verl's GRPO.
    """
    breakdown = breakdown_from_config(token_level_rewards, response_mask, index, config)
    return breakdown.advantages, breakdown.advantages
