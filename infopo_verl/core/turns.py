"""Agent-turn structure of a multi-turn response, read off ``response_mask`` (torch; numpy for one search on CPU).

SPEC section 2: agent turns are the maximal runs of 1 in ``response_mask``; the feedback between them is 0.
The rollout puts r_t on the last token of every agent turn but the final one, and the outcome R on the last
response token. :class:`TurnLayout` is the sparse list of turns (row, first and last position), so per-turn
statistics never touch every token; finding the turns costs one pass over the mask and one search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["TurnLayout", "flat_nonzero", "row_spans", "turn_layout"]


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


def flat_nonzero(values: torch.Tensor) -> torch.Tensor:
    """(k,) int64 flat positions of the nonzero entries of ``values``, ascending.

    On CPU this goes through numpy, whose ``flatnonzero`` is several times faster than ``torch.nonzero`` on a
    large mostly-zero tensor (one vectorised counting pass, then one fill; measured in
    ``benchmarks/bench_estimator.py``). The numpy array is a view of the (flattened) tensor.
    """
    flat = values.reshape(-1)
    if flat.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(flat.numpy()))
    return torch.nonzero(flat).squeeze(1)


def turn_layout(response_mask: torch.Tensor) -> TurnLayout:
    """Find the agent turns of ``response_mask`` (bs, response_length), any dtype where nonzero means "agent".

    The mask is read once, flat: every position whose value differs from its left neighbour is a candidate
    boundary, and so is every row boundary (a turn never continues into the next row). Only the few candidates
    are then looked at: a turn starts at a candidate that is agent while its left neighbour in the row is not,
    and ends one before a candidate whose left neighbour in the row is agent while it is not. (A value change
    between two nonzero values, as in a mask of 1 and 2, is a candidate and neither.)
    """
    bs, length = response_mask.shape
    device = response_mask.device
    stride = max(length, 1)  # row stride of the flat mask (1 keeps the arithmetic defined for length 0)
    flat = response_mask.reshape(-1)  # [bs * L]
    changes = flat_nonzero(flat[1:] != flat[:-1]) + 1  # [c] positions p with flat[p] != flat[p - 1]
    row_bounds = torch.arange(0, bs * length + 1, stride, device=device)  # [bs + 1]
    candidates = torch.cat([changes, row_bounds]).unique()  # [c'] ascending, no duplicates
    at_row_start = candidates % stride == 0  # [c'] includes the position one past the last row
    inside = candidates < bs * length  # [c']
    agent_here = torch.zeros_like(at_row_start)
    agent_here[inside] = flat[candidates[inside]] != 0  # [c']
    agent_left = torch.zeros_like(at_row_start)
    has_left = candidates > 0
    agent_left[has_left] = flat[candidates[has_left] - 1] != 0  # [c'] the left neighbour, possibly in the row above
    starts = candidates[agent_here & (at_row_start | ~agent_left)]  # [n] first token of each turn, flat
    stops = candidates[agent_left & (at_row_start | ~agent_here)]  # [n] one past the last token of each turn, flat
    start_rows = torch.div(starts, stride, rounding_mode="floor")  # [n]
    turns_per_row = torch.bincount(start_rows, minlength=bs)  # [bs]

    # 1-based turn number within the row: position in the flat list minus the row's first position.
    row_offset = torch.cumsum(turns_per_row, 0) - turns_per_row  # [bs]
    number = torch.arange(starts.numel(), device=device) - row_offset[start_rows] + 1  # [n]
    is_final = number == turns_per_row[start_rows]  # [n]
    return TurnLayout(
        row=start_rows,
        start=starts - start_rows * length,
        end=stops - 1 - start_rows * length,
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
