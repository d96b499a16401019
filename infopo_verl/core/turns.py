"""Agent-turn structure of a multi-turn response, read off ``response_mask`` (torch only).

SPEC section 2: agent turns are the maximal runs of 1 in ``response_mask``; the feedback between them is 0.
The rollout puts r_t on the last token of every agent turn but the final one, and the outcome R on the last
response token. :class:`TurnLayout` is the sparse list of turns (row, first and last position), so per-turn
statistics never touch every token; finding the turns costs a few passes over the mask.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

__all__ = ["TurnLayout", "row_spans", "turn_layout"]


@dataclasses.dataclass(frozen=True)
class TurnLayout:
    """Turns of a batch. ``n`` below is the number of agent turns in the whole batch, row-major order."""

    row: torch.Tensor
    """(n,) int64: the row each turn belongs to."""
    start: torch.Tensor
    """(n,) int64: position of the first token of each turn."""
    end: torch.Tensor
    """(n,) int64: position of the last token of each turn."""
    number: torch.Tensor
    """(n,) int64: 1-based turn number within its row."""
    is_final: torch.Tensor
    """(n,) bool: the row's last agent turn, which never carries an r_t."""
    turns_per_row: torch.Tensor
    """(bs,) int64."""

    @property
    def length(self) -> torch.Tensor:
        """(n,) int64: token length L_t of each turn."""
        return self.end - self.start + 1

    @property
    def max_turns(self) -> int:
        return int(self.turns_per_row.max()) if self.turns_per_row.numel() else 0


def turn_layout(response_mask: torch.Tensor) -> TurnLayout:
    """Find the agent turns of ``response_mask`` (bs, response_length), any dtype where nonzero means "agent"."""
    bs = response_mask.shape[0]
    # Pad with a zero column on each side; the difference of neighbours is +1 where a turn starts and -1 one past
    # where it ends. A few int8 passes and one nonzero pass find every turn boundary of the batch.
    agent = (response_mask != 0).view(torch.int8)  # [bs, L] 0/1, a free reinterpretation of the bool tensor
    padded = torch.nn.functional.pad(agent, (1, 1))  # [bs, L + 2]
    edges = padded[:, 1:] - padded[:, :-1]  # [bs, L + 1]
    edge_rows, edge_cols = edges.nonzero(as_tuple=True)  # row-major: start, end + 1, start, end + 1, ...
    start_rows, start_cols = edge_rows[0::2], edge_cols[0::2]  # [n]
    end_cols = edge_cols[1::2] - 1  # [n]
    turns_per_row = torch.bincount(start_rows, minlength=bs)  # [bs]

    # 1-based turn number within the row: position in the flat list minus the row's first position.
    row_offset = torch.cumsum(turns_per_row, 0) - turns_per_row  # [bs]
    number = torch.arange(start_rows.numel(), device=response_mask.device) - row_offset[start_rows] + 1  # [n]
    is_final = number == turns_per_row[start_rows]  # [n]
    return TurnLayout(
        row=start_rows,
        start=start_cols,
        end=end_cols,
        number=number,
        is_final=is_final,
        turns_per_row=turns_per_row,
    )


def row_spans(response_mask: Sequence[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int] | None]]:
    """Agent turns of one row and the non-agent span after each, read off its final ``response_mask``.

    Returns ``(turn_spans, gap_spans)``, inclusive positions: ``turn_spans[i]`` is the i-th run of nonzero (agent
    turn i, as :func:`turn_layout` finds it, so the rollout and the estimator agree on every turn),
    ``gap_spans[i]`` the run of zeros that follows it up to the next turn or the end of the response (the
    feedback to turn i, with any boundary tokens the chat template inserted), or None when turn i ends the
    response. A builder that removed or inserted tokens at a boundary is accounted for by construction.
    """
    layout = turn_layout(torch.as_tensor(list(response_mask), dtype=torch.int64).view(1, -1))  # [1, L]
    starts, ends = layout.start.tolist(), layout.end.tolist()  # [n], [n]
    turn_spans = list(zip(starts, ends))
    following = [*starts[1:], len(response_mask)]  # first position after each turn's gap
    gap_spans = [(end + 1, stop - 1) if stop > end + 1 else None for end, stop in zip(ends, following)]
    return turn_spans, gap_spans
