"""InfoPO's variance-gated advantage, the whole math in one place (torch; SPEC section 1).

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
  at every float32 step, this rounds once), and to the bit where verl's own arithmetic is exact, on the rows
  that carry a loss (verl's GRPO also counts all-zero-mask rows in its group statistics; see the last point).
- The fused advantage is built per turn and written onto its tokens with one cumulative sum (no dense per-token
  turn index); the outcome is summed from the nonzero rewards only.
- A row whose response_mask is all zero carries no loss: a dialogue the rollout gave up on (simulator failure,
  aborted generation) or one of verl's batch-balancing padding rows (uid ``pad...``, zero rewards). The paper has
  no such rows; here they are left out of every statistic (the outcome's group mean and std, the gate, the turn
  pool, the magnitude bound's batch stds) and their advantages are 0, so a simulator fault never becomes a
  negative advantage for the rest of its group. A group left with one trained row is a singleton.

Each equation is one function below, in the order the paper applies them; :func:`infopo_advantages` chains them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch

from infopo_verl.core.turns import TurnLayout, flat_nonzero, turn_layout

__all__ = [
    "AdvantageBreakdown",
    "infopo_advantages",
    "group_ids_from_index",
    "outcome_scores",
    "outcome_advantage",
    "group_gate",
    "info_advantage_by_turn",
    "info_advantage_by_token",
    "magnitude_scale",
    "fuse",
]


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
    trained: torch.Tensor
    """(bs,) bool: rows with at least one agent token. The others are out of every statistic; their A is 0."""
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


def outcome_scores(token_level_rewards: torch.Tensor, layout: TurnLayout) -> torch.Tensor:
    """R_i (bs,) float64: every reward except those at non-final turn ends, summed on its own.

    Never "total minus the r_t": in a tied group that rounding residue, divided by std + eps, is a spurious
    advantage. Rewards are sparse (one value per turn end plus the outcome), so only the nonzero entries are read.
    """
    bs, length = token_level_rewards.shape
    nonfinal = ~layout.is_final  # [n]
    flat_rewards = token_level_rewards.reshape(-1)  # [bs * L]
    reward_positions = flat_nonzero(flat_rewards != 0)  # [m] flat, ascending
    reward_values = flat_rewards[reward_positions].to(torch.float64)  # [m]
    turn_end_positions = layout.row[nonfinal] * length + layout.end[nonfinal]  # [n'] flat
    is_turn_end = torch.isin(reward_positions, turn_end_positions)  # [m]
    reward_rows = torch.div(reward_positions, max(length, 1), rounding_mode="floor")  # [m]
    outcome = torch.zeros(bs, dtype=torch.float64, device=token_level_rewards.device)
    return outcome.index_add_(0, reward_rows[~is_turn_end], reward_values[~is_turn_end])  # [bs]


def outcome_advantage(
    outcome: torch.Tensor, groups: torch.Tensor, num_groups: int, trained: torch.Tensor, eps: float, by_std: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A_ext_i = (R_i - mean_g R) / (std_g R + eps) over the group's trained rows (verl GRPO: a singleton group
    has mean 0, std 1). Returns A_ext (bs,) and std_g R (G,), which is 0 for a singleton group (for the gate)."""
    count, mean, std = _group_stats(outcome, groups, num_groups, trained.to(outcome.dtype))  # [G] each
    singleton = count < 2  # [G]
    ext_mean = torch.where(singleton, torch.zeros_like(mean), mean)  # [G]
    ext_std = torch.where(singleton, torch.ones_like(std), std)  # [G]
    return _standardise(outcome, ext_mean[groups], ext_std[groups], eps, by_std), std  # [bs], [G]


def group_gate(outcome_std: torch.Tensor, temperature: float, enabled: bool) -> torch.Tensor:
    """gate_g = sigmoid(-std_g R / T) (G,): 0.5 for a tied group, closing as outcomes separate; 1 when off."""
    if not enabled:
        return torch.ones_like(outcome_std)
    return torch.sigmoid(-outcome_std / temperature)


def info_advantage_by_turn(
    info_gain: torch.Tensor, layout: TurnLayout, turn_group: torch.Tensor, num_groups: int, eps: float, by_std: bool
) -> torch.Tensor:
    """Paper: A_info_{i,t} = (r_{i,t} - mean_g r) / (std_g r + eps) (n,) over the pool of every non-final agent
    turn of the group (an unscored turn carries r = 0); a pool of fewer than two turns gives 0."""
    pooled = ~layout.is_final  # [n]
    count, mean, std = _group_stats(info_gain, turn_group, num_groups, pooled.to(info_gain.dtype))  # [G] each
    standardised = _standardise(info_gain, mean[turn_group], std[turn_group], eps, by_std)  # [n]
    return torch.where(pooled & (count[turn_group] >= 2), standardised, torch.zeros_like(info_gain))  # [n]


def info_advantage_by_token(
    info_gain: torch.Tensor, layout: TurnLayout, turn_group: torch.Tensor, num_groups: int, eps: float, by_std: bool
) -> torch.Tensor:
    """Released code: every token of turn t carries v = r_t / L_t, standardised over the group's tokens with
    v != 0 (fewer than two: 0); tokens with v = 0 get 0. Returns the value on each turn's tokens (n,)."""
    token_length = layout.length.to(info_gain.dtype)  # [n]
    values = info_gain / token_length  # [n]
    pooled = values != 0  # [n]
    count, mean, std = _group_stats(values, turn_group, num_groups, token_length * pooled)  # [G] each
    standardised = _standardise(values, mean[turn_group], std[turn_group], eps, by_std)  # [n]
    return torch.where(pooled & (count[turn_group] >= 2), standardised, torch.zeros_like(values))  # [n]


def magnitude_scale(
    outcome_advantage: torch.Tensor, info_advantage: torch.Tensor, layout: TurnLayout, eps: float
) -> float:
    """Released code: min(1, max(std(A_ext), 1) / (std(A_info) + eps)), both over the batch's agent tokens
    (rows without agent tokens weigh 0); 1.0 for fewer than two agent tokens."""
    token_length = layout.length.to(torch.float64)  # [n]
    if float(token_length.sum()) < 2:
        return 1.0
    one_group = torch.zeros_like(layout.row)  # [n]
    _, _, std_ext = _group_stats(outcome_advantage[layout.row], one_group, 1, token_length)  # [1]
    _, _, std_info = _group_stats(info_advantage, one_group, 1, token_length)  # [1]
    return float(torch.clamp(torch.clamp(std_ext, min=1.0) / (std_info + eps), max=1.0))


def fuse(
    template: torch.Tensor,
    layout: TurnLayout,
    outcome_advantage: torch.Tensor,
    row_gate: torch.Tensor,
    info_advantage: torch.Tensor,
    beta: float,
    intrinsic_only: bool,
) -> torch.Tensor:
    """A_{i,k} = m_{i,k} * (A_ext_i + beta * gate_g * A_info_{i,t(k)}) (or m * A_info), shaped and typed like
    ``template`` (bs, response_length); 0 off the agent tokens, so 0 on every row without one.

    Built per turn, then written onto its tokens: +v at its first token, -v after its last, and a cumulative sum
    along the response. Turns are disjoint and the running sum is back to exactly 0 between them (0 + v = v,
    v - v = 0), so every agent token gets exactly its turn's value. (torch's CPU cumsum runs sequentially along a
    row, accumulating in double; the driver calls this on CPU.)
    """
    if intrinsic_only:
        turn_value = info_advantage  # [n]
    else:
        turn_value = outcome_advantage[layout.row] + beta * row_gate[layout.row] * info_advantage  # [n]
    turn_value = turn_value.to(template.dtype)
    advantages = torch.zeros_like(template)  # [bs, L]
    advantages[layout.row, layout.start] = turn_value
    closed = layout.end + 1 < template.shape[1]  # [n] a turn that runs to the last position needs no closing step
    advantages[layout.row[closed], layout.end[closed] + 1] = -turn_value[closed]
    return advantages.cumsum_(dim=-1)


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
    """Compute InfoPO advantages: the equations above, in order.

    Args:
        token_level_rewards: (bs, response_length) rewards in the SPEC section 2 layout.
        response_mask: (bs, response_length), nonzero on agent tokens; an all-zero row is out of every statistic.
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

    layout = turn_layout(response_mask)
    groups = group_ids.to(token_level_rewards.device)  # [bs]
    num_groups = int(groups.max()) + 1 if bs else 0
    trained = layout.turns_per_row > 0  # [bs]; a row without agent tokens has no turns, so no turn statistic sees it
    turn_group = groups[layout.row]  # [n]

    outcome = outcome_scores(token_level_rewards, layout)  # [bs]
    ext, outcome_std = outcome_advantage(outcome, groups, num_groups, trained, eps, norm_by_std)  # [bs], [G]
    row_gate = group_gate(outcome_std, gate_temperature, gate)[groups]  # [bs]

    info_gain = torch.where(
        layout.is_final,
        torch.zeros((), dtype=torch.float64, device=groups.device),
        token_level_rewards[layout.row, layout.end].to(torch.float64),
    )  # [n] r_t at each non-final turn's last token
    by_pool = info_advantage_by_turn if normalization == "turn" else info_advantage_by_token
    info = by_pool(info_gain, layout, turn_group, num_groups, eps, norm_by_std)  # [n]
    info_scale = magnitude_scale(ext, info, layout, eps) if magnitude_bound else 1.0
    info = info * info_scale

    return AdvantageBreakdown(
        advantages=fuse(token_level_rewards, layout, ext, row_gate, info, beta, intrinsic_only),
        outcome=outcome,
        outcome_advantage=ext,
        gate=row_gate,
        info_gain=info_gain,
        info_advantage=info,
        info_scale=info_scale,
        trained=trained,
        layout=layout,
    )
