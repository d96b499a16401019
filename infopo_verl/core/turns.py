"""Agent-turn structure of a multi-turn response, read off ``response_mask`` (torch only).

SPEC section 2: agent turns are the maximal runs of 1 in ``response_mask``; the feedback between them is 0.
The rollout puts r_t on the last token of every agent turn but the final one, and the outcome R on the last
response token. :class:`TurnLayout` gives both the dense per-token turn number (to broadcast per-turn values back
onto tokens) and the sparse list of turns (to compute per-turn statistics without touching every token).
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["TurnLayout", "turn_layout"]


@dataclasses.dataclass(frozen=True)
class TurnLayout:
    """Turns of a batch. ``n`` below is the number of agent turns in the whole batch, row-major order."""

    mask: torch.Tensor
    """(bs, response_length) bool: response_mask."""
    turn_number: torch.Tensor
    """(bs, response_length) int64: 1-based number of the latest agent turn started at or before each position
    (0 before the first turn). Equals the turn of every agent token; feedback tokens carry the turn they answer."""
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
    """Find the agent turns of ``response_mask`` (bs, response_length), any dtype where nonzero means "agent".

    Cost: a few passes over the mask; the per-turn work is on the n turns only.
    """
    mask = response_mask.bool()  # [bs, L]
    bs = mask.shape[0]
    previous = torch.zeros_like(mask)
    previous[:, 1:] = mask[:, :-1]
    following = torch.zeros_like(mask)
    following[:, :-1] = mask[:, 1:]
    starts = mask & ~previous  # [bs, L] first token of a turn
    ends = mask & ~following  # [bs, L] last token of a turn

    start_rows, start_cols = starts.nonzero(as_tuple=True)  # [n], row-major, so starts and ends pair up in order
    _, end_cols = ends.nonzero(as_tuple=True)  # [n]
    turns_per_row = torch.bincount(start_rows, minlength=bs)  # [bs]

    # 1-based turn number within the row: position in the flat list minus the row's first position.
    row_offset = torch.cumsum(turns_per_row, 0) - turns_per_row  # [bs]
    number = torch.arange(start_rows.numel(), device=mask.device) - row_offset[start_rows] + 1  # [n]
    is_final = number == turns_per_row[start_rows]  # [n]

    # Dense turn number. A cumulative sum in the narrowest integer type that cannot overflow is several times
    # cheaper than in int64 on a (1024 x 8192) batch; the index for gather must be int64 in the end.
    widest = int(turns_per_row.max()) if bs else 0
    count_dtype = torch.uint8 if widest < 2**8 else torch.int16 if widest < 2**15 else torch.int32
    turn_number = starts.to(count_dtype).cumsum(dim=-1, dtype=count_dtype).long()  # [bs, L]
    return TurnLayout(
        mask=mask,
        turn_number=turn_number,
        row=start_rows,
        start=start_cols,
        end=end_cols,
        number=number,
        is_final=is_final,
        turns_per_row=turns_per_row,
    )
