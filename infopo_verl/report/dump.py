"""The per-turn record in verl's rollout dump (``trainer.rollout_data_dir``) on both trainers.

- Legacy trainer (``trainer.use_v1=false``): ``RayPPOTrainer._log_rollout_data`` dumps every ``reward_extra_info``
  column, so the reward manager's ``turn_record`` and ``outcome`` reach ``<step>.jsonl`` with no change to verl.
- v1 trainer (the default): verl 0.9.1's ``PPOTrainer._log_rollout_data`` fetches only ``uid``, ``prompts``,
  ``responses``, ``rm_scores`` and ``reward_model`` from TransferQueue and dumps no reward column.
  :class:`TurnRecordDumpMixin`, placed before verl's trainer class in a subclass's bases, fetches each dumped
  sample's ``extra_fields`` (which hold the reward manager's ``reward_extra_info``) under the same keys and adds
  those columns to the dump.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def reward_extra_columns(extra_fields: Sequence[Any]) -> dict[str, list]:
    """Columns ``{key: [value per sample]}`` from each sample's ``extra_fields["reward_extra_info"]``.

    A sample without a key gets None in that column (verl's validation path does the same), so every column has
    one entry per sample and verl's ``_write_generations`` keeps it.
    """
    infos = []
    for fields in extra_fields:
        fields = getattr(fields, "data", fields)  # TransferQueue may hand back NonTensorData wrappers
        info = fields.get("reward_extra_info", {}) if isinstance(fields, dict) else {}
        infos.append(info if isinstance(info, dict) else {})
    keys = sorted({key for info in infos for key in info})
    return {key: [info.get(key) for info in infos] for key in keys}


class TurnRecordDumpMixin:
    """v1-trainer mixin: the rollout dump also carries the reward manager's ``reward_extra_info`` columns.

    verl's ``_log_rollout_data`` sorts the batch and passes the sorted TransferQueue keys to ``_dump_generations``
    as the ``uid`` column; this mixin remembers the batch's partition while that runs and fetches ``extra_fields``
    for exactly those keys, in that order. Validation dumps (no batch) pass through unchanged.
    """

    def _log_rollout_data(self, batch, timing_raw, rollout_data_dir):
        self._turn_record_dump_partition = batch.partition_id
        try:
            return super()._log_rollout_data(batch, timing_raw, rollout_data_dir)
        finally:
            self._turn_record_dump_partition = None

    def _dump_generations(self, inputs, outputs, gts, scores, reward_extra_infos_dict, dump_path):
        partition = getattr(self, "_turn_record_dump_partition", None)
        keys = reward_extra_infos_dict.get("uid")
        if partition is not None and keys:
            import transfer_queue as tq

            data = tq.kv_batch_get(keys=list(keys), partition_id=partition, select_fields=["extra_fields"])
            # As verl's own _validate reads it: pop() gives the NonTensorStack, whose tolist() has one dict per key.
            columns = reward_extra_columns(data.pop("extra_fields").tolist())
            reward_extra_infos_dict = {**columns, **reward_extra_infos_dict}
        return super()._dump_generations(inputs, outputs, gts, scores, reward_extra_infos_dict, dump_path)
