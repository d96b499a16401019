"""Per-turn credit view: where each dialogue's advantage went, turn by turn.

Joins what the rollout recorded (its :class:`~infopo_verl.rollout.record.RolloutRecord`: turn spans, texts, r_t)
with the estimator's :class:`~infopo_verl.core.advantage.AdvantageBreakdown` into rows a person can read. A row
whose response_mask is all zero (a failure left out of training) has no turn in the estimator's view: its turns
are listed with zero advantage. Two sources, one view:

- :func:`credit_view`: a batch after ``compute_advantage`` (the demo);
- :func:`credit_from_records`: the per-turn records verl's rollout dump holds (``infopo-verl report
  --dialogues``). The dump has no advantages (neither of verl's trainers writes them), so A_ext, the gate, A_info
  and each turn's advantage are recomputed here with the same estimator from the dumped r_t and outcomes.

:func:`ranked_turns` picks the best and worst credited turns; :func:`format_dialogue` and :func:`format_ranked`
print the view in a terminal; :mod:`infopo_verl.report.dialogues` renders the same objects as HTML.
"""

from __future__ import annotations

import dataclasses
import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from verl import DataProto

from infopo_verl.core.advantage import AdvantageBreakdown
from infopo_verl.estimator import breakdown_from_config
from infopo_verl.report.record import DUMP_FIELDS
from infopo_verl.rollout.record import RolloutRecord


@dataclasses.dataclass(frozen=True)
class TurnCredit:
    turn: int
    agent: str
    user: str | None
    info_gain: float | None
    info_advantage: float
    advantage: float


@dataclasses.dataclass(frozen=True)
class DialogueCredit:
    row: int
    group: str
    outcome: float
    outcome_advantage: float
    gate: float
    ended_by: str
    turns: list[TurnCredit]


def credit_view(batch: DataProto, algorithm) -> list[DialogueCredit]:
    """One :class:`DialogueCredit` per row of ``batch`` (after ``compute_advantage``)."""
    uids = batch.non_tensor_batch["uid"]
    breakdown: AdvantageBreakdown = breakdown_from_config(
        batch.batch["token_level_rewards"], batch.batch["response_mask"], uids, algorithm
    )
    records = []
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)  # None: another agent loop's row
        records.append({} if record is None else {field: getattr(record, field) for field in DUMP_FIELDS})
    return _dialogues(records, uids, breakdown, batch.batch["advantages"])


def _dialogues(records: Sequence[dict], uids, breakdown: AdvantageBreakdown, advantages: torch.Tensor):
    layout = breakdown.layout
    dialogues = []
    turn_index = 0
    for row, record in enumerate(records):
        untrained = int(layout.turns_per_row[row]) == 0
        turns = []
        for number, (start, end) in enumerate(record.get("turn_spans", [])):
            if untrained:
                turns.append(TurnCredit(number, record["agent_texts"][number], record["feedback_texts"][number],
                                        record["info_gain"][number], 0.0, 0.0))
                continue
            # The estimator found the same turns in response_mask, in the same order: check rather than assume.
            if int(layout.row[turn_index]) != row or int(layout.start[turn_index]) != start:
                raise ValueError(f"row {row}, turn {number}: the recorded span starts at {start} but response_mask "
                                 "does not have a turn there; was the batch reordered or re-padded?")
            turns.append(
                TurnCredit(
                    turn=number,
                    agent=record["agent_texts"][number],
                    user=record["feedback_texts"][number],
                    info_gain=record["info_gain"][number],
                    info_advantage=float(breakdown.info_advantage[turn_index]),
                    advantage=float(advantages[row, start]),
                )
            )
            turn_index += 1
        dialogues.append(
            DialogueCredit(
                row=row,
                group=str(uids[row])[:8],
                outcome=float(breakdown.outcome[row]),
                outcome_advantage=float(breakdown.outcome_advantage[row]),
                gate=float(breakdown.gate[row]),
                ended_by=record.get("ended_by", ""),
                turns=turns,
            )
        )
    return dialogues


def credit_from_records(records: Sequence[dict], outcomes: Sequence[float], algorithm) -> list[DialogueCredit]:
    """Credit of dumped dialogues: A_ext, gate, A_info and advantages recomputed from r_t and outcomes.

    ``records`` are parsed :func:`dump_record` objects (each with ``uid``), one per dialogue of a step, all rows of
    their groups together (verl dumps the whole batch of a step). The estimator runs on a rebuilt batch: each
    row's agent turns at their recorded response positions (response_mask 1), r_t on the last token of every
    non-final turn and the outcome one position after the row's last turn, where no turn ends (SPEC section 2).
    """
    if len(records) != len(outcomes):
        raise ValueError(f"{len(records)} records but {len(outcomes)} outcomes")
    width = 2 + max((end for record in records for _, end in record.get("turn_spans", [])), default=0)
    rewards = torch.zeros(len(records), width, dtype=torch.float32)  # [bs, L]
    mask = torch.zeros(len(records), width, dtype=torch.int64)  # [bs, L]
    for row, (record, outcome) in enumerate(zip(records, outcomes)):
        spans = record.get("turn_spans", [])
        for number, (start, end) in enumerate(spans):
            if record.get("trained", True):  # a failure's mask was all zero: out of every statistic, as in training
                mask[row, start : end + 1] = 1
            gain = record["info_gain"][number]
            if gain is not None and number < len(spans) - 1:
                rewards[row, end] = gain
        rewards[row, width - 1] = float(outcome)
    uids = np.array([record.get("uid") for record in records], dtype=object)
    breakdown = breakdown_from_config(rewards, mask, uids, algorithm)
    return _dialogues(records, uids, breakdown, breakdown.advantages)


def ranked_turns(dialogues: Sequence[DialogueCredit], count: int) -> tuple[list, list]:
    """The ``count`` turns with the highest advantage and the ``count`` with the lowest (disjoint), as
    ``(dialogue, turn)`` pairs: where the step put its credit."""
    pairs = sorted(((dialogue, turn) for dialogue in dialogues for turn in dialogue.turns),
                   key=lambda pair: pair[1].advantage, reverse=True)
    best = pairs[:count]
    worst = pairs[max(count, len(pairs) - count):][::-1]
    return best, worst


def format_ranked(dialogues: Sequence[DialogueCredit], count: int = 3, width: int = 44) -> str:
    """Plain-text lists of the best and the worst credited turns of these dialogues."""
    best, worst = ranked_turns(dialogues, count)
    lines = []
    for title, pairs in (("best credited turns", best), ("worst credited turns", worst)):
        lines.append(f"{title}:")
        for dialogue, turn in pairs:
            lines.append(f"  adv {turn.advantage:+7.3f}  dialogue {dialogue.row} turn {turn.turn} (R = "
                         f"{dialogue.outcome:.3f}): {_cell(turn.agent, width)}  ->  {_cell(turn.user, width)}")
    return "\n".join(lines)


def _cell(text: str | None, width: int) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return textwrap.shorten(flat, width=width, placeholder="...") if flat else '""'


def dialogue_header(dialogue: DialogueCredit) -> str:
    """One line: the dialogue, its group, outcome R, outcome advantage, gate and how it ended."""
    return (
        f"dialogue {dialogue.row} (group {dialogue.group}): R = {dialogue.outcome:.3f}, "
        f"A_ext = {dialogue.outcome_advantage:+.3f}, gate = {dialogue.gate:.3f}, ended by {dialogue.ended_by}"
    )


def format_dialogue(dialogue: DialogueCredit, width: int = 44) -> str:
    """A plain-text table: turn, what the agent said, what the user said, r_t, A_info, advantage."""
    lines = [dialogue_header(dialogue), f"  {'turn':>4}  {'agent said':<{width}}  {'user said':<{width}}  {'r_t':>8}  {'A_info':>7}  {'adv':>7}"]
    for turn in dialogue.turns:
        gain = f"{turn.info_gain:+.4f}" if turn.info_gain is not None else "-"
        lines.append(
            f"  {turn.turn:>4}  {_cell(turn.agent, width):<{width}}  {_cell(turn.user, width):<{width}}  "
            f"{gain:>8}  {turn.info_advantage:+7.3f}  {turn.advantage:+7.3f}"
        )
    return "\n".join(lines)
