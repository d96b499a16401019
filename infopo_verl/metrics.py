"""Per-step ``infopo/*`` training metrics: what InfoPO's mechanism did to one training batch.

:func:`step_metrics` is the pure computation: the batch after verl's ``compute_advantage`` in, a flat
``{name: float}`` out, ready for verl's ``Tracking.log``. It recomputes the estimator's breakdown from the batch
(the estimator itself has no metrics channel: verl calls it with tensors only) and reads the rollout records for
what only the rollout knows (which turns were scored, failures, scoring cost). Every metric is defined, with its
equation and what a healthy run shows, in ``docs/metrics.md``; :mod:`infopo_verl.trainer` logs them every step.

Conventions: "trained" rows are those whose response_mask has an agent token (the estimator leaves every other
row out of its statistics); a mean over an empty set is NaN (the step had no such item), never a made-up 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from verl import DataProto

from infopo_verl.config import InfoPOConfig
from infopo_verl.core.advantage import AdvantageBreakdown, group_ids_from_index
from infopo_verl.estimator import breakdown_from_config
from infopo_verl.rollout.output import RECORD_KEY

__all__ = ["step_metrics", "rollout_records", "record_field", "PREFIX"]

PREFIX = "infopo/"


def record_field(record: Any, name: str, default: Any = None) -> Any:
    """One field of a rollout record, whether it is a plain dict (``extra_fields["infopo"]``) or a typed record
    with attributes; ``default`` when the record is None or lacks the field (an older record)."""
    if record is None:
        return default
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


def rollout_records(batch: DataProto) -> list[Any]:
    """The rollout record of every row (None for a row without one: padding, another agent loop).

    The legacy trainer's batch carries them as the column ``non_tensor_batch["infopo"]``; the v1 trainer stores the
    whole ``extra_fields`` dict per row, so a batch read back from its TransferQueue may carry that instead.
    """
    columns = batch.non_tensor_batch
    if RECORD_KEY in columns:
        return list(columns[RECORD_KEY])
    if "extra_fields" in columns:
        return [fields.get(RECORD_KEY) if isinstance(fields, Mapping) else None for fields in columns["extra_fields"]]
    return [None] * len(batch)


def _mean(values) -> float:
    values = list(values)
    return float(sum(values) / len(values)) if values else math.nan


def _std(values) -> float:
    """Unbiased (n - 1), like every std in the estimator; NaN for fewer than two values."""
    values = list(values)
    return float(torch.tensor(values, dtype=torch.float64).std()) if len(values) >= 2 else math.nan


def _group_metrics(breakdown: AdvantageBreakdown, groups: torch.Tensor) -> dict[str, float]:
    """Gate and ties per group of trained rows (a group whose rows all failed has no statistic)."""
    trained = breakdown.trained
    gates, tied, sized = [], [], 0
    for group in torch.unique(groups[trained]).tolist():
        members = trained & (groups == group)  # [bs]
        outcomes = breakdown.outcome[members]
        gates.append(float(breakdown.gate[members][0]))
        if outcomes.numel() >= 2:
            sized += 1
            tied.append(bool((outcomes == outcomes[0]).all()))
    return {
        "gate/mean": _mean(gates),
        "tied_group_fraction": _mean(tied),
        "groups": float(len(gates)),
        "singleton_groups": float(len(gates) - sized),
    }


def _advantage_metrics(breakdown: AdvantageBreakdown, config: InfoPOConfig) -> dict[str, float]:
    """info_share and A_info by agent-turn index, per agent token / per non-final turn of the trained rows."""
    layout = breakdown.layout
    length = layout.length.to(torch.float64)  # [n] tokens of each turn
    if config.intrinsic_only:
        outcome_term = torch.zeros_like(breakdown.info_advantage)  # [n]
        info_term = breakdown.info_advantage  # [n]
    else:
        outcome_term = breakdown.outcome_advantage[layout.row]  # [n]
        info_term = config.beta * breakdown.gate[layout.row] * breakdown.info_advantage  # [n]
    info_mass = float((length * info_term.abs()).sum())
    total_mass = float((length * (outcome_term.abs() + info_term.abs())).sum())
    metrics = {"info_share": info_mass / total_mass if total_mass > 0 else math.nan}

    nonfinal = ~layout.is_final  # [n]
    turn_index = layout.number - 1  # [n] 0-based agent-turn index
    for k in torch.unique(turn_index[nonfinal]).tolist():
        at_k = nonfinal & (turn_index == k)
        metrics[f"info_advantage/turn_{k}"] = float(breakdown.info_advantage[at_k].mean())
    return metrics


def _rollout_metrics(records: list[Any], trained: list[bool]) -> dict[str, float]:
    """What only the rollout knows: scored information gains, scoring cost, failures, aborted generations."""
    scored: list[float] = []
    by_turn: dict[int, list[float]] = {}
    dialogues = scored_turns = skipped = requests = tokens = failures = aborted = 0
    seconds: list[float] = []
    for record, row_trained in zip(records, trained, strict=True):
        if record is None:
            continue
        dialogues += 1
        gains = list(record_field(record, "info_gain", None) or [])
        scored_turns += sum(gain is not None for gain in gains)
        skipped += int(record_field(record, "scoring_skipped", 0) or 0)
        requests += int(record_field(record, "scoring_requests", 0) or 0)
        tokens += int(record_field(record, "scoring_tokens", 0) or 0)
        seconds.append(float(record_field(record, "scoring_seconds", 0.0) or 0.0))
        failures += record_field(record, "simulator_failure", None) is not None
        aborted += bool(record_field(record, "aborted", False))
        if row_trained:  # the raw signal the estimator trained on
            for k, gain in enumerate(gains):
                if gain is not None:
                    scored.append(float(gain))
                    by_turn.setdefault(k, []).append(float(gain))
    metrics = {
        "info_gain/mean": _mean(scored),
        "info_gain/std": _std(scored),
        "scoring/turns": float(scored_turns),
        "scoring/skipped": float(skipped),
        "scoring/requests": float(requests),
        "scoring/tokens": float(tokens),
        "scoring/seconds": _mean(seconds),
        "simulator_failures": float(failures),
        "aborted": float(aborted),
        "dialogues": float(dialogues),
    }
    metrics.update({f"info_gain/turn_{k}": _mean(values) for k, values in sorted(by_turn.items())})
    return metrics


def step_metrics(batch: DataProto, algorithm: Mapping[str, Any] | None) -> dict[str, float]:
    """The ``infopo/*`` metrics of one training batch, after verl's ``compute_advantage``.

    Args:
        batch: the training batch: ``response_mask`` (bs, response_length), the rewards as the estimator saw them
            (``token_level_scores``, i.e. ``rm_scores`` before any in-reward KL; else ``token_level_rewards`` or
            ``rm_scores``), ``non_tensor_batch["uid"]`` (bs,), and the rollout records (see
            :func:`rollout_records`).
        algorithm: verl's ``algorithm`` config section (the same one the estimator receives).

    Returns:
        ``{"infopo/<name>": float}``; names and equations in ``docs/metrics.md``.
    """
    tensors = batch.batch
    present = [key for key in ("token_level_scores", "token_level_rewards", "rm_scores") if key in tensors.keys()]
    reward_key = present[0] if present else None
    if reward_key is None or "response_mask" not in tensors.keys():
        raise KeyError(
            f"step_metrics needs response_mask and the rewards (token_level_scores, token_level_rewards or rm_scores); "
            f"the batch has {sorted(tensors.keys())}"
        )
    index = batch.non_tensor_batch.get("uid")
    rewards, response_mask = tensors[reward_key], tensors["response_mask"]
    # The metrics describe rm_scores in InfoPO's layout, whatever the in-reward KL did to token_level_rewards.
    without_kl = {key: algorithm[key] for key in algorithm.keys() if key != "use_kl_in_reward"} if algorithm else None
    breakdown = breakdown_from_config(rewards, response_mask, index, without_kl)
    config = InfoPOConfig.from_algorithm(algorithm)
    groups = group_ids_from_index(index)
    trained = breakdown.trained

    metrics = {
        "outcome/mean": _mean(breakdown.outcome[trained].tolist()),
        "magnitude_scale": float(breakdown.info_scale),
        "trained_rows": float(trained.sum()),
        "excluded_rows": float((~trained).sum()),
    }
    metrics.update(_group_metrics(breakdown, groups))
    metrics.update(_advantage_metrics(breakdown, config))
    metrics.update(_rollout_metrics(rollout_records(batch), trained.tolist()))
    return {PREFIX + name: value for name, value in metrics.items()}
