"""The ``infopo`` reward manager (``reward.reward_manager.name=infopo``): outcome score and its logged breakdown.

Ownership, one home per computation:

- the agent loop (:mod:`infopo_verl.rollout.agent_loop`) measures: turn spans, information gains r_t, the
  environment's final score, simulator failures, aborted generations; it records them as a
  :class:`~infopo_verl.rollout.record.RolloutRecord` in ``extra_fields["infopo"]``;
- this manager decides the outcome R of a dialogue and reports, per sample and with the same keys for every
  sample, what the rollout measured (verl turns these into ``reward_extra_info`` columns and metrics);
- :mod:`infopo_verl.rollout.output` lays the per-turn values out in ``rm_scores``; the estimator
  (:mod:`infopo_verl.core.advantage`) turns them into advantages.

Outcome: the environment's final score recorded by the rollout. A sample without one (another agent loop
produced it, or a row whose task has no environment score) is scored by verl's own path: the configured
``reward.custom_reward_function`` or verl's ``default_compute_score``, through verl's ``NaiveRewardManager``.
A dialogue that ended because the user simulator failed, or whose generation was aborted, scores 0 and is
flagged, never guessed (unless ``algorithm.infopo.train_on_failures``, its response_mask is all zero: no loss).
"""

from __future__ import annotations

import math
from typing import Any

from verl import DataProto
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
from verl.experimental.reward_loop.reward_manager.naive import NaiveRewardManager

from infopo_verl.envs.base import task_metric_columns
from infopo_verl.rollout.record import RolloutRecord
from infopo_verl.startup import check_training_config
from infopo_verl.report.record import DUMP_KEY, dump_record

REWARD_MANAGER_NAME = "infopo"

EXTRA_INFO_KEYS = (
    "outcome",
    "info_gain_sum",
    "info_gain_mean",
    "info_gain_count",
    "turns",
    "scoring_skipped",
    "simulator_failed",
    "aborted",
    DUMP_KEY,
)
"""Keys of ``reward_extra_info``: identical for every sample so verl can stack them into columns. ``turn_record``
is the per-turn record as a JSON string, for verl's rollout dump (``trainer.rollout_data_dir``) and
``infopo-verl report --dialogues``; the others are numbers."""


def breakdown(record: RolloutRecord | None, outcome: float, uid: Any = None) -> dict[str, float | str]:
    """The per-sample ``reward_extra_info`` for a rollout record (None: a sample from another agent loop)."""
    gains = record.measured_gains if record is not None else []
    return {
        "outcome": float(outcome),
        "info_gain_sum": float(sum(gains)),
        "info_gain_mean": float(sum(gains) / len(gains)) if gains else 0.0,
        "info_gain_count": float(len(gains)),
        "turns": float(len(record.turn_spans)) if record is not None else 0.0,
        "scoring_skipped": float(record.scoring_skipped) if record is not None else 0.0,
        "simulator_failed": float(record is not None and record.simulator_failure is not None),
        "aborted": float(record is not None and record.aborted),
        DUMP_KEY: dump_record(record, uid),
    }


class InfoPORewardManager(RewardManagerBase):
    """Reward-loop manager: one sample in, ``{"reward_score", "reward_extra_info"}`` out."""

    def __init__(self, config, tokenizer, compute_score, reward_router_address=None, reward_model_tokenizer=None):
        super().__init__(config, tokenizer, compute_score)
        # Reward workers start with the trainer, long before the first advantage: check the whole training config
        # here too (infopo_verl.startup), the backstop for a stock-config run without InfoPO's start-up callback.
        check_training_config(config)
        self.fallback = NaiveRewardManager(
            config,
            tokenizer,
            compute_score,
            reward_router_address=reward_router_address,
            reward_model_tokenizer=reward_model_tokenizer,
        )

    async def run_single(self, data: DataProto) -> dict[str, Any]:
        item = data[-1]  # as verl's managers: a multi-output trajectory is scored on its last sequence
        record = RolloutRecord.from_extra_fields(item.non_tensor_batch.get("tool_extra_fields"))

        if record is not None and record.failed:
            outcome = 0.0
        elif record is not None and record.env_score is not None:
            outcome = float(record.env_score)
        else:
            outcome = float((await self.fallback.run_single(data))["reward_score"])
        if not math.isfinite(outcome):
            raise ValueError(f"non-finite outcome score {outcome!r} for data_source {item.non_tensor_batch.get('data_source')!r}")
        # Task metrics (ColBench's pass / succ): the same keys for every sample, None where a family has none.
        task_metrics = task_metric_columns(record.task_metrics if record is not None else None)
        uid = item.non_tensor_batch.get("uid")  # the trainer's group id, a dataset-column kwarg of the rollout
        return {"reward_score": outcome, "reward_extra_info": {**breakdown(record, outcome, uid), **task_metrics}}
