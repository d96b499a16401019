"""Per-turn credit view: where each dialogue's advantage went, turn by turn.

Joins what the rollout recorded (its :class:`~infopo_verl.rollout.record.RolloutRecord`: turn spans, texts, r_t)
with the estimator's :class:`~infopo_verl.core.advantage.AdvantageBreakdown` into rows a person can read. Used by
the demo; works on any batch that went through the ``infopo_user`` loop and ``compute_advantage``. A row whose
response_mask is all zero (a failure left out of training) has no turn in the estimator's view: its turns are
listed with zero advantage.
"""

from __future__ import annotations

import dataclasses
import textwrap

from verl import DataProto

from infopo_verl.core.advantage import AdvantageBreakdown
from infopo_verl.estimator import breakdown_from_config
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
    breakdown: AdvantageBreakdown = breakdown_from_config(
        batch.batch["token_level_rewards"], batch.batch["response_mask"], batch.non_tensor_batch["uid"], algorithm
    )
    layout = breakdown.layout
    advantages = batch.batch["advantages"]
    dialogues = []
    turn_index = 0
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)  # None: another agent loop's row
        untrained = int(layout.turns_per_row[row]) == 0
        turns = []
        for number, (start, end) in enumerate(record.turn_spans if record is not None else []):
            if untrained:
                turns.append(TurnCredit(number, record.agent_texts[number], record.feedback_texts[number],
                                        record.info_gain[number], 0.0, 0.0))
                continue
            # The estimator found the same turns in response_mask, in the same order: check rather than assume.
            if int(layout.row[turn_index]) != row or int(layout.start[turn_index]) != start:
                raise ValueError(f"row {row}, turn {number}: the recorded span starts at {start} but response_mask "
                                 "does not have a turn there; was the batch reordered or re-padded?")
            turns.append(
                TurnCredit(
                    turn=number,
                    agent=record.agent_texts[number],
                    user=record.feedback_texts[number],
                    info_gain=record.info_gain[number],
                    info_advantage=float(breakdown.info_advantage[turn_index]),
                    advantage=float(advantages[row, start]),
                )
            )
            turn_index += 1
        dialogues.append(
            DialogueCredit(
                row=row,
                group=str(batch.non_tensor_batch["uid"][row])[:8],
                outcome=float(breakdown.outcome[row]),
                outcome_advantage=float(breakdown.outcome_advantage[row]),
                gate=float(breakdown.gate[row]),
                ended_by=record.ended_by if record is not None else "",
                turns=turns,
            )
        )
    return dialogues


def _cell(text: str | None, width: int) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return textwrap.shorten(flat, width=width, placeholder="...") if flat else '""'


def format_dialogue(dialogue: DialogueCredit, width: int = 44) -> str:
    """A plain-text table: turn, what the agent said, what the user said, r_t, A_info, advantage."""
    header = (
        f"dialogue {dialogue.row} (group {dialogue.group}): R = {dialogue.outcome:.3f}, "
        f"A_ext = {dialogue.outcome_advantage:+.3f}, gate = {dialogue.gate:.3f}, ended by {dialogue.ended_by}"
    )
    lines = [header, f"  {'turn':>4}  {'agent said':<{width}}  {'user said':<{width}}  {'r_t':>8}  {'A_info':>7}  {'adv':>7}"]
    for turn in dialogue.turns:
        gain = f"{turn.info_gain:+.4f}" if turn.info_gain is not None else "-"
        lines.append(
            f"  {turn.turn:>4}  {_cell(turn.agent, width):<{width}}  {_cell(turn.user, width):<{width}}  "
            f"{gain:>8}  {turn.info_advantage:+7.3f}  {turn.advantage:+7.3f}"
        )
    return "\n".join(lines)
