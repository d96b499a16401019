"""The per-turn rollout record as verl's rollout dump carries it (``trainer.rollout_data_dir``).

The ``infopo`` reward manager adds :func:`dump_record` to every sample's ``reward_extra_info`` under
:data:`DUMP_KEY`; verl's dump code writes it on the sample's line; :mod:`infopo_verl.report.dialogues` reads it
back. Plain ``json`` only: the reward manager imports this module while verl itself is still being imported (the
plugin entry point), so it must not import verl.
"""

from __future__ import annotations

import json
from typing import Any

DUMP_KEY = "turn_record"
"""``reward_extra_info`` key carrying :func:`dump_record` (a JSON string, so every sample has the same keys, verl
stacks it as a string column and its validation statistics skip it); verl's rollout dump writes it per line."""
DUMP_FIELDS = ("turn_spans", "info_gain", "agent_texts", "feedback_texts", "ended_by", "simulator_failure", "trained")
"""What of the rollout record the dump keeps: enough to rebuild every turn's credit."""


def dump_record(record: Any, uid: Any) -> str:
    """The part of a rollout record (a :class:`~infopo_verl.rollout.record.RolloutRecord`) the credit view needs,
    with the sample's group ``uid``, as one JSON string.

    ``"{}"`` for a sample without a record (another agent loop produced it).
    """
    if record is None:
        return "{}"
    kept = {field: getattr(record, field) for field in DUMP_FIELDS}
    kept["uid"] = None if uid is None else str(uid)
    return json.dumps(kept, ensure_ascii=False)
