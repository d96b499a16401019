"""InfoPO's variance-gated advantage, the whole math in one place (torch only; SPEC section 1).

Inputs are verl's: ``token_level_rewards`` (bs, response_length) laid out as SPEC section 2 says (r_t on the last
token of every non-final agent turn, the outcome on the last response token), ``response_mask`` (bs,
response_length), and one integer group id per row (verl's ``uid``, already factorised).

Paper equations (``normalization="turn"``, the default)::

    R_i          = sum of rewards at every position that is not a non-final turn end      (summed on its own)
    A_ext_i      = (R_i - mean_g R) / (std_g R + eps)                 singleton group: mean 0, std 1
    A_info_{i,t} = (r_{i,t} - mean_g r) / (std_g r + eps)             pool: every non-final turn of the group
    gate_g       = sigmoid(-std_g R / T)                              std_g R = 0 for a singleton group
    A_{i,k}      = m_{i,k} * (A_ext_i + beta * gate_g * A_info_{i,t(k)})

Released-code parity (``normalization="token"``): every token of turn t carries v = r_t / L_t; the group pool is
every masked token with v != 0 (fewer than two tokens: A_info = 0) and tokens with v = 0 get A_info = 0.
``magnitude_bound`` scales A_info by min(1, max(std(A_ext), 1) / (std(A_info) + eps)), both over the masked tokens
of the whole batch. All std are unbiased (n - 1), as ``torch.std`` and verl's GRPO.

How this departs from a literal per-token implementation, and why:

- Group statistics are computed in float64 from per-row and per-turn values (a token pool of L_t equal values is
  a weight L_t), so the cost is a few passes over the (bs, response_length) tensors plus work on the turns only.
  float64 also makes a tied group's mean exactly its common value: its advantage is exactly 0 instead of a
  float32 rounding residue divided by eps (which would be of order 1e-2). verl's own GRPO keeps that residue for
  ties at values such as 0.1. Elsewhere ``beta: 0`` equals verl's GRPO to float32 rounding (1-2 ulp: verl rounds
  at every float32 step, this rounds once), and to the bit where verl's own arithmetic is exact.
- The fused advantage is built per turn and written onto its tokens with one cumulative sum (no dense per-token
  turn index); the outcome is summed from the nonzero rewards only.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from infopo_verl.core.turns import TurnLayout, turn_layout

__all__ = ["AdvantageBreakdown", "infopo_advantages", "group_ids_from_index"]


@dataclasses.dataclass(frozen=True)
class AdvantageBreakdown:
    """The advantage and every intermediate quantity, for metrics and the per-turn credit view."""

    advantages: torch.Tensor
    """(bs, response_length): A, also verl's ``returns``. Same dtype as the rewards."""
    outcome: torch.Tensor
    """(bs,) float64: R_i."""
    outcome_advantage: torch.Tensor
    """(bs,) float64: A_ext_i."""
    gate: torch.Tensor
    """(bs,) float64: gate of the row's group (1 when the gate is off)."""
    info_gain: torch.Tensor
    """(n,) float64: r_t of every agent turn in ``layout`` order (0 for final turns)."""
    info_advantage: torch.Tensor
    """(n,) float64: A_info of every turn after any magnitude bound (token mode: the value on each of its tokens)."""
    info_scale: float
    """Factor the magnitude bound applied to A_info (1.0 when off or not binding)."""
    layout: TurnLayout


def group_ids_from_index(index) -> torch.Tensor:
    """(bs,) int64 group ids from verl's ``uid`` array (any hashable values), in order of first appearance."""
    first_seen: dict = {}
    return torch.tensor([first_seen.setdefault(uid, len(first_seen)) for uid in index], dtype=torch.long)


def _group_stats(
    values: torch.Tensor, groups: torch.Tensor, num_groups: int, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted count, mean and unbiased std of ``values`` (m,) per group (``groups`` (m,)); all (num_groups,).

    A weight w counts its value w times (w = 0 leaves it out). Groups with count < 2 get std 0 (callers decide
    what such a group means); empty groups get mean 0.
    """
    weights = torch.ones_like(values) if weights is None else weights
    count = values.new_zeros(num_groups).index_add_(0, groups, weights)  # [G]
    total = values.new_zeros(num_groups).index_add_(0, groups, weights * values)  # [G]
    mean = total / count.clamp(min=1)  # [G]
    deviation = values - mean[groups]  # [m]
    squares = values.new_zeros(num_groups).index_add_(0, groups, weights * deviation * deviation)  # [G]
    std = torch.where(count > 1, (squares / (count - 1).clamp(min=1)).sqrt(), torch.zeros_like(squares))  # [G]
    return count, mean, std


def _standardise(values: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, eps: float, by_std: bool):
    return (values - mean) / (std + eps) if by_std else values - mean


def infopo_advantages(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    beta: float,
    gate_temperature: float,
    normalization: Literal["turn", "token"] = "turn",
    magnitude_bound: bool = False,
    gate: bool = True,
    intrinsic_only: bool = False,
    eps: float = 1e-6,
    norm_by_std: bool = True,
) -> AdvantageBreakdown:
    """Compute InfoPO advantages.

    Args:
        token_level_rewards: (bs, response_length) rewards in the SPEC section 2 layout.
        response_mask: (bs, response_length), nonzero on agent tokens.
        group_ids: (bs,) int64 group of each row (see :func:`group_ids_from_index`).
        beta, gate_temperature, normalization, magnitude_bound, gate, intrinsic_only, eps: ``algorithm.infopo``.
        norm_by_std: ``algorithm.norm_adv_by_std_in_grpo``.
    """
    if normalization not in ("turn", "token"):
        raise ValueError(f"normalization must be 'turn' or 'token', got {normalization!r}")
    if token_level_rewards.shape != response_mask.shape:
        raise ValueError(
            f"token_level_rewards {tuple(token_level_rewards.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must have the same (bs, response_length) shape"
        )
    bs = token_level_rewards.shape[0]
    if group_ids.shape != (bs,):
        raise ValueError(f"group_ids must have shape ({bs},), got {tuple(group_ids.shape)}")

    device = token_level_rewards.device
    f64 = torch.float64
    layout = turn_layout(response_mask)
    groups = group_ids.to(device)  # [bs]
    num_groups = int(groups.max()) + 1 if bs else 0
    nonfinal = ~layout.is_final  # [n]
    turn_group = groups[layout.row]  # [n]

    # Outcome R: every position except the non-final turn ends, summed on its own (never total minus r_t).
    # Rewards are sparse (one value per turn end plus the outcome), so only the nonzero entries are read.
    length = token_level_rewards.shape[1]
    reward_rows, reward_cols = token_level_rewards.nonzero(as_tuple=True)  # [m], row-major
    reward_values = token_level_rewards[reward_rows, reward_cols].to(f64)  # [m]
    turn_end_keys = layout.row[nonfinal] * length + layout.end[nonfinal]  # [n'] ascending
    is_turn_end = torch.isin(reward_rows * length + reward_cols, turn_end_keys)  # [m]
    outcome = torch.zeros(bs, dtype=f64, device=device).index_add_(
        0, reward_rows[~is_turn_end], reward_values[~is_turn_end]
    )  # [bs]

    count_r, mean_r, std_r = _group_stats(outcome, groups, num_groups)  # [G] each
    singleton = count_r < 2  # [G]; verl GRPO: singleton group -> mean 0, std 1
    ext_mean = torch.where(singleton, torch.zeros_like(mean_r), mean_r)
    ext_std = torch.where(singleton, torch.ones_like(std_r), std_r)
    outcome_advantage = _standardise(outcome, ext_mean[groups], ext_std[groups], eps, norm_by_std)  # [bs]

    if gate:
        group_gate = torch.sigmoid(-std_r / gate_temperature)  # [G]; std_r is 0 for singletons
    else:
        group_gate = torch.ones_like(std_r)
    row_gate = group_gate[groups]  # [bs]

    # Information gain r_t of each turn (final turns carry none).
    info_gain = torch.where(
        nonfinal, token_level_rewards[layout.row, layout.end].to(f64), torch.zeros((), dtype=f64, device=device)
    )  # [n]
    if normalization == "turn":
        values = info_gain  # [n]
        pooled = nonfinal  # [n] the pool: every non-final turn, eligible or not (r = 0)
        weights = pooled.to(f64)
    else:
        values = info_gain / layout.length.to(f64)  # [n] value on each of the turn's tokens
        pooled = values != 0  # [n] the pool: tokens with a nonzero value
        weights = layout.length.to(f64) * pooled
    count_i, mean_i, std_i = _group_stats(values, turn_group, num_groups, weights)  # [G] each
    standardised = _standardise(values, mean_i[turn_group], std_i[turn_group], eps, norm_by_std)  # [n]
    info_advantage = torch.where(pooled & (count_i[turn_group] >= 2), standardised, torch.zeros_like(values))  # [n]

    info_scale = 1.0
    if magnitude_bound:
        row_tokens = torch.zeros(bs, dtype=f64, device=device).index_add_(0, layout.row, layout.length.to(f64))
        if float(row_tokens.sum()) >= 2:
            zeros_b = torch.zeros(bs, dtype=torch.long, device=device)
            zeros_n = torch.zeros_like(layout.row)
            _, _, std_ext_tokens = _group_stats(outcome_advantage, zeros_b, 1, row_tokens)
            _, _, std_info_tokens = _group_stats(info_advantage, zeros_n, 1, layout.length.to(f64))
            ratio = torch.clamp(std_ext_tokens, min=1.0) / (std_info_tokens + eps)
            info_scale = float(torch.clamp(ratio, max=1.0))
            info_advantage = info_advantage * info_scale

    # Fuse per turn, then write each turn's value onto its tokens: +v at its first token, -v after its last, and a
    # cumulative sum along the response. Turns are disjoint and the running sum is back to exactly 0 between them
    # (0 + v = v, v - v = 0), so every agent token gets exactly its turn's value and every other position 0.
    # (torch's CPU cumsum runs sequentially along a row, accumulating in double; the driver calls this on CPU.)
    if intrinsic_only:
        turn_value = info_advantage  # [n]
    else:
        turn_value = outcome_advantage[layout.row] + beta * row_gate[layout.row] * info_advantage  # [n]
    turn_value = turn_value.to(token_level_rewards.dtype)
    advantages = torch.zeros_like(token_level_rewards)  # [bs, L]
    advantages[layout.row, layout.start] = turn_value
    closed = layout.end + 1 < length  # [n] a turn that runs to the last position needs no closing step
    advantages[layout.row[closed], layout.end[closed] + 1] = -turn_value[closed]
    advantages.cumsum_(dim=-1)

    return AdvantageBreakdown(
        advantages=advantages,
        outcome=outcome,
        outcome_advantage=outcome_advantage,
        gate=row_gate,
        info_gain=info_gain,
        info_advantage=info_advantage,
        info_scale=info_scale,
        layout=layout,
    )
