"""Information gain of one agent turn and its place in the reward tensor (pure Python/torch; SPEC sections 1-2).

    r_t = (1/L) * sum_k [ log pi(y_k | ctx_t, o_t, y_<k) - log pi(y_k | ctx_t, PH, y_<k) ]

where y is the next agent turn a_{t+1} (L tokens, as sampled). The rollout collects both log-prob lists; this
module only combines them and lays the results out in the token positions the estimator reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["information_gain", "place_turn_rewards"]


def information_gain(factual_logprobs: Sequence[float], counterfactual_logprobs: Sequence[float]) -> float:
    """Mean per-token log-likelihood ratio of a_{t+1} with the real feedback versus the placeholder.

    Both lists hold log pi(y_k | ...) for the same L >= 1 tokens y_1..y_L. The result may be negative (a
    single-sample KL estimate); it is not clipped.
    """
    if len(factual_logprobs) != len(counterfactual_logprobs):
        raise ValueError(
            f"factual ({len(factual_logprobs)}) and counterfactual ({len(counterfactual_logprobs)}) log-probs must "
            "cover the same tokens of a_(t+1)"
        )
    if not factual_logprobs:
        raise ValueError("information gain needs at least one token of a_(t+1)")
    total = sum(float(f) - float(c) for f, c in zip(factual_logprobs, counterfactual_logprobs, strict=True))
    return total / len(factual_logprobs)


def place_turn_rewards(rm_scores: torch.Tensor, entries: Sequence[Sequence[float]]) -> torch.Tensor:
    """Add per-turn values to ``rm_scores`` in place and return it.

    Args:
        rm_scores: (response_length,) the row's reward tensor, outcome already on the last response token.
        entries: ``[position, value]`` pairs: ``position`` is the last token of agent turn t (a response index),
            ``value`` is r_t (or beta * r_t for a non-InfoPO estimator). Added, so a value never overwrites R.
    """
    if not entries:
        return rm_scores
    positions = torch.tensor([int(position) for position, _ in entries], dtype=torch.long)  # [n_turns]
    values = torch.tensor([float(value) for _, value in entries], dtype=rm_scores.dtype)  # [n_turns]
    length = rm_scores.shape[-1]
    if int(positions.min()) < 0 or int(positions.max()) >= length:
        raise ValueError(f"turn-end positions {positions.tolist()} must lie inside the response (length {length})")
    return rm_scores.index_add_(0, positions, values)
