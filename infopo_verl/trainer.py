"""InfoPO's per-step ``infopo/*`` metrics in verl's tracker, on the v1 sync trainer and on the legacy trainer.

verl calls a registered advantage estimator with tensors only, so the estimator cannot log. Each trainer gets the
smallest hook that sees the batch after ``compute_advantage`` and writes into the step's metrics dict, which verl
then hands to its ``Tracking`` (console, file, wandb, tensorboard, ...). Both are selected by config alone:

- v1 trainer (``trainer.use_v1=true``): ``trainer.v1.trainer_mode=infopo_sync`` (set by ``infopo_trainer.yaml``)
  selects :class:`InfoPOSyncTrainer`, verl's ``PPOTrainerSync`` plus one step after ``_compute_advantage``.
  verl switches behaviour on ``trainer.v1.trainer_mode == "sync"`` in several places (replay buffer, dataloader
  refill, checkpoints, prompt submission), so the trainer rewrites the mode to ``sync`` in the job config before
  verl's constructor reads it: from there on verl sees, and logs, exactly its sync trainer.
- legacy trainer (``trainer.use_v1=false``): InfoPO's manager
  (``actor_rollout_ref.rollout.agent.agent_loop_manager_class=infopo_verl.rollout.output.InfoPOAgentLoopManager``,
  required there anyway) calls :func:`install_legacy_step_metrics` when the trainer builds it. The legacy
  ``RayPPOTrainer.fit`` collects its step metrics through the module function
  ``verl.trainer.ppo.ray_trainer.compute_data_metrics(batch=...)`` once per step, after ``compute_advantage``; the
  hook wraps that function, in the TaskRunner process only, to add ``step_metrics``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import transfer_queue as tq
from verl import DataProto
from verl.trainer.ppo.v1 import PPOTrainerSync

from infopo_verl.metrics import step_metrics
from infopo_verl.report.dump import TurnRecordDumpMixin
from infopo_verl.rollout.output import RECORD_KEY
from infopo_verl.startup import TRAINER_MODE, check_training_config

__all__ = ["InfoPOSyncTrainer", "install_legacy_step_metrics", "TRAINER_MODE"]

METRIC_FIELDS = ["uid", "response_mask", "rm_scores", "extra_fields"]
"""TransferQueue fields ``step_metrics`` reads on the v1 trainer (the rollout record lives in ``extra_fields``)."""


class InfoPOSyncTrainer(TurnRecordDumpMixin, PPOTrainerSync):
    """verl's v1 sync trainer that also logs :func:`~infopo_verl.metrics.step_metrics` every step."""

    def __init__(self, config):
        check_training_config(config)
        # Everything in verl that asks for the trainer mode must get "sync": this is the sync trainer.
        config.trainer.v1.trainer_mode = "sync"
        super().__init__(config)

    def _compute_advantage(self, batch, metrics: dict):
        padding = [bool(tag.get("is_padding", False)) for tag in batch.tags]  # the tags balancing gave the rows
        batch = super()._compute_advantage(batch, metrics)
        data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=METRIC_FIELDS)
        metrics.update(step_metrics(metrics_batch(data, padding), self.config.algorithm))
        return batch


def metrics_batch(data, padding: list[bool]) -> DataProto:
    """A ``DataProto`` for :func:`step_metrics` from the v1 trainer's TransferQueue fields (nested tensors padded
    on the right; the uid and the rollout records as non-tensor columns).

    verl's batch-balancing padding rows (tag ``is_padding``) are copies of a real row's fields with a zero mask;
    their record is dropped so that no dialogue is counted twice (the rows still count as excluded rows).
    """
    extra_fields = data.pop("extra_fields").tolist()
    uid = np.array(data.pop("uid").tolist(), dtype=object)
    records = np.empty(len(extra_fields), dtype=object)
    records[:] = [
        None if is_padding or not isinstance(fields, Mapping) else fields.get(RECORD_KEY)
        for fields, is_padding in zip(extra_fields, padding, strict=True)
    ]
    return DataProto(batch=data.to_padded_tensor(), non_tensor_batch={"uid": uid, RECORD_KEY: records})


def install_legacy_step_metrics(algorithm: Mapping[str, Any]) -> None:
    """Make the legacy trainer's per-step ``compute_data_metrics`` also return ``step_metrics(batch, algorithm)``.

    Idempotent: a second call replaces the algorithm section, never stacks wrappers.
    """
    from verl.trainer.ppo import ray_trainer

    original = getattr(ray_trainer.compute_data_metrics, "__wrapped__", ray_trainer.compute_data_metrics)

    @functools.wraps(original)
    def compute_data_metrics(batch: DataProto, use_critic: bool = True) -> dict[str, Any]:
        metrics = original(batch=batch, use_critic=use_critic)
        metrics.update(step_metrics(batch, algorithm))
        return metrics

    ray_trainer.compute_data_metrics = compute_data_metrics
