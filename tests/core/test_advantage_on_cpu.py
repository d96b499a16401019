"""The ``infopo`` advantage estimator against a slow loop oracle written from SPEC section 1 and section 2.

The oracle below is deliberately naive: plain Python loops over groups, rows, turns and tokens, float64
throughout, ``torch.std`` (unbiased) for every standard deviation. It was written from the SPEC text alone, before
reading the vectorised implementation, so a shared misreading is the only way both can be wrong together. The hand
cases pin the oracle itself to numbers derived on paper; the random batches then pin the implementation to the
oracle in every mode combination; verl's own GRPO, ``compute_advantage`` and the v1 trainer's advantage path pin
the glue.
"""

from __future__ import annotations

import itertools
import math
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import verl
from omegaconf import OmegaConf
from verl import DataProto
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage, get_adv_estimator_fn
from verl.trainer.ppo.ray_trainer import compute_advantage
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

from infopo_verl.config import ConfigError
from infopo_verl.estimator import breakdown_from_config, compute_infopo_advantage

# Tight enough that a wrong pool, a missing (n - 1) or a wrong gate shows; loose enough for the float32 output.
ATOL = 1e-5
RTOL = 1e-5


# --------------------------------------------------------------------------------------------------------------
# The oracle: SPEC section 1 read literally, one loop per sentence.
# --------------------------------------------------------------------------------------------------------------


def agent_turns(mask_row: list[float]) -> list[tuple[int, int]]:
    """Maximal runs of 1 in one response_mask row, as (first, last) inclusive token positions (SPEC section 2)."""
    turns = []
    start = None
    for position, value in enumerate(mask_row):
        if value and start is None:
            start = position
        elif not value and start is not None:
            turns.append((start, position - 1))
            start = None
    if start is not None:  # truncated mid-turn: the run reaches the last column
        turns.append((start, len(mask_row) - 1))
    return turns


def _std(values: list[float]) -> float:
    """Unbiased (n - 1) standard deviation, exactly as ``torch.std`` computes it (SPEC: "as torch.std")."""
    return torch.tensor(values, dtype=torch.float64).std().item()


def _mean(values: list[float]) -> float:
    return torch.tensor(values, dtype=torch.float64).mean().item()


def oracle_advantages(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    uids,
    *,
    beta: float = 0.5,
    gate_temperature: float = 0.5,
    normalization: str = "turn",
    magnitude_bound: bool = False,
    gate: bool = True,
    intrinsic_only: bool = False,
    eps: float = 1e-6,
    norm_by_std: bool = True,
) -> torch.Tensor:
    """SPEC section 1 as loops. Returns A: (bs, response_length) float64."""
    rewards = token_level_rewards.to(torch.float64).tolist()
    mask = response_mask.to(torch.float64).tolist()
    batch_size, length = len(rewards), len(rewards[0])

    # Reward layout (SPEC section 2): r_t on the last token of every non-final agent turn, R = everything else,
    # summed on its own.
    turns = [agent_turns(mask[i]) for i in range(batch_size)]
    info_gain = []  # info_gain[i][t] = r_t of row i's non-final turn t
    outcome = []
    for i in range(batch_size):
        intrinsic_positions = {last for (_, last) in turns[i][:-1]}
        info_gain.append([rewards[i][last] for (_, last) in turns[i][:-1]])
        outcome.append(sum(rewards[i][k] for k in range(length) if k not in intrinsic_positions))

    # A row with no agent token (a failed dialogue, a padding row) is in no group: it carries no loss and
    # enters no statistic; its advantages stay 0.
    groups: dict = {}
    for i, uid in enumerate(uids):
        if turns[i]:
            groups.setdefault(uid, []).append(i)

    outcome_advantage = [0.0] * batch_size
    row_gate = [1.0] * batch_size
    info_advantage = [[0.0] * length for _ in range(batch_size)]  # per token; final turn and feedback stay 0
    for members in groups.values():
        # A_ext: verl GRPO; a singleton group uses mean 0, std 1 (and std 0 for the gate).
        if len(members) == 1:
            mean_outcome, std_outcome, std_for_gate = 0.0, 1.0, 0.0
        else:
            group_outcomes = [outcome[i] for i in members]
            mean_outcome, std_outcome = _mean(group_outcomes), _std(group_outcomes)
            std_for_gate = std_outcome
        for i in members:
            centred = outcome[i] - mean_outcome
            outcome_advantage[i] = centred / (std_outcome + eps) if norm_by_std else centred
            row_gate[i] = 1.0 / (1.0 + math.exp(std_for_gate / gate_temperature)) if gate else 1.0

        if normalization == "turn":
            # Pool: every non-final turn of every rollout of the group (non-eligible turns carry r = 0).
            pool = [value for i in members for value in info_gain[i]]
            if len(pool) < 2:
                continue
            pool_mean, pool_std = _mean(pool), _std(pool)
            for i in members:
                for t, (first, last) in enumerate(turns[i][:-1]):
                    centred = info_gain[i][t] - pool_mean
                    value = centred / (pool_std + eps) if norm_by_std else centred
                    for k in range(first, last + 1):
                        info_advantage[i][k] = value
        elif normalization == "token":
            # Released-code parity: each token of turn t carries r_t / L_t; the pool is the non-zero ones.
            token_value = {}
            for i in members:
                for t, (first, last) in enumerate(turns[i][:-1]):
                    for k in range(first, last + 1):
                        token_value[(i, k)] = info_gain[i][t] / (last - first + 1)
            pool = [value for value in token_value.values() if value != 0.0]
            if len(pool) < 2:
                continue
            pool_mean, pool_std = _mean(pool), _std(pool)
            for (i, k), value in token_value.items():
                if value == 0.0:
                    continue
                centred = value - pool_mean
                info_advantage[i][k] = centred / (pool_std + eps) if norm_by_std else centred
        else:
            raise AssertionError(normalization)

    if magnitude_bound:
        masked = [(i, k) for i in range(batch_size) for k in range(length) if mask[i][k]]
        std_ext = _std([outcome_advantage[i] for i, k in masked])
        std_info = _std([info_advantage[i][k] for i, k in masked])
        scale = min(1.0, max(std_ext, 1.0) / (std_info + eps))
        info_advantage = [[value * scale for value in row] for row in info_advantage]

    advantages = [[0.0] * length for _ in range(batch_size)]
    for i in range(batch_size):
        for k in range(length):
            if intrinsic_only:
                fused = info_advantage[i][k]
            else:
                fused = outcome_advantage[i] + beta * row_gate[i] * info_advantage[i][k]
            advantages[i][k] = mask[i][k] * fused
    return torch.tensor(advantages, dtype=torch.float64)


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def algorithm_config(norm_by_std: bool = True, **infopo) -> dict:
    """verl's ``algorithm`` section as the estimator receives it, with an ``infopo`` sub-section."""
    return {"norm_adv_by_std_in_grpo": norm_by_std, "use_kl_in_reward": False, "infopo": infopo}


def run_estimator(rewards, mask, uids, norm_by_std: bool = True, **infopo) -> torch.Tensor:
    advantages, returns = compute_infopo_advantage(
        token_level_rewards=rewards,
        response_mask=mask,
        index=np.array(uids, dtype=object),
        config=algorithm_config(norm_by_std, **infopo),
    )
    assert advantages.shape == rewards.shape and advantages.dtype == rewards.dtype
    assert torch.equal(advantages, returns)
    return advantages


def run_oracle(rewards, mask, uids, norm_by_std: bool = True, **infopo) -> torch.Tensor:
    return oracle_advantages(rewards, mask, uids, norm_by_std=norm_by_std, **infopo)


def both(rewards, mask, uids, **settings):
    """(implementation, oracle), both as float64, for the same inputs and settings."""
    return run_estimator(rewards, mask, uids, **settings).double(), run_oracle(rewards, mask, uids, **settings)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def tensors(rewards_rows, mask_rows):
    return (
        torch.tensor(rewards_rows, dtype=torch.float32),
        torch.tensor(mask_rows, dtype=torch.int64),
    )


# --------------------------------------------------------------------------------------------------------------
# Hand-derived cases: every expected number below is arithmetic written out in the comments, not the oracle.
# --------------------------------------------------------------------------------------------------------------

EPS = 1e-6

# Group "a" of two rollouts, 8 response tokens each.
#   row 0: mask 1 1 0 1 1 0 1 1   turns [0,1] [3,4] [6,7](final); r_0 = 0.75 at 1, r_1 = 0.25 at 4, R = 1 at 7
#   row 1: mask 1 0 0 1 1 1 0 0   turns [0] [3,5](final);          r_0 = 0.5 at 0,                  R = 0 at 5
HAND_REWARDS = [
    [0.0, 0.75, 0.0, 0.0, 0.25, 0.0, 0.0, 1.0],
    [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
]
HAND_MASK = [
    [1, 1, 0, 1, 1, 0, 1, 1],
    [1, 0, 0, 1, 1, 1, 0, 0],
]
HAND_UIDS = ["a", "a"]


@pytest.mark.parametrize("compute", [run_estimator, run_oracle], ids=["implementation", "oracle"])
def test_hand_case_turn_mode(compute):
    rewards, mask = tensors(HAND_REWARDS, HAND_MASK)
    # R = (1, 0): mean 0.5, unbiased std sqrt((0.25 + 0.25) / 1) = sqrt(0.5).
    std_outcome = math.sqrt(0.5)
    a_ext = 0.5 / (std_outcome + EPS)  # row 0: +a_ext, row 1: -a_ext
    # gate = sigmoid(-sqrt(0.5) / 0.5) = sigmoid(-1.41421...) ~ 0.1955.
    gate_value = sigmoid(-std_outcome / 0.5)
    # Turn pool {0.75, 0.25, 0.5}: mean 0.5, unbiased std sqrt((0.0625 + 0.0625 + 0) / 2) = 0.25.
    #   A_info: row0 t0 = +0.25 / (0.25 + eps), row0 t1 = -0.25 / (0.25 + eps), row1 t0 = 0.
    z = 0.25 / (0.25 + EPS)
    beta = 0.5
    expected = torch.tensor(
        [
            [a_ext + beta * gate_value * z] * 2 + [0.0] + [a_ext - beta * gate_value * z] * 2 + [0.0] + [a_ext] * 2,
            [-a_ext, 0.0, 0.0, -a_ext, -a_ext, -a_ext, 0.0, 0.0],
        ],
        dtype=torch.float64,
    )
    got = compute(rewards, mask, HAND_UIDS, beta=beta, gate_temperature=0.5, eps=EPS).double()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("compute", [run_estimator, run_oracle], ids=["implementation", "oracle"])
def test_hand_case_token_mode(compute):
    # Same dialogues, row 1's first turn not eligible (r = 0) and row 0's r = (0.5, 0.25).
    rewards_rows = [row[:] for row in HAND_REWARDS]
    rewards_rows[0][1], rewards_rows[0][4], rewards_rows[1][0] = 0.5, 0.25, 0.0
    rewards, mask = tensors(rewards_rows, HAND_MASK)
    # Token values: row0 t0 (L=2) 0.25, 0.25; row0 t1 (L=2) 0.125, 0.125; row1 t0 0 (not in the pool).
    # Pool {0.25, 0.25, 0.125, 0.125}: mean 0.1875, deviations +-0.0625,
    #   unbiased var = 4 * 0.0625^2 / 3 = 0.015625 / 3, std = 0.0625 * 2 / sqrt(3);
    #   A_info = +-0.0625 / (std + eps) = +-sqrt(3)/2 (up to eps).
    pool_std = 0.0625 * 2 / math.sqrt(3)
    z = 0.0625 / (pool_std + EPS)
    a_ext = 0.5 / (math.sqrt(0.5) + EPS)
    beta, temperature = 1.0, 2.0
    gate_value = sigmoid(-math.sqrt(0.5) / temperature)
    expected = torch.tensor(
        [
            [a_ext + beta * gate_value * z] * 2 + [0.0] + [a_ext - beta * gate_value * z] * 2 + [0.0] + [a_ext] * 2,
            [-a_ext, 0.0, 0.0, -a_ext, -a_ext, -a_ext, 0.0, 0.0],
        ],
        dtype=torch.float64,
    )
    got = compute(rewards, mask, HAND_UIDS, beta=beta, gate_temperature=temperature, normalization="token", eps=EPS)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0)
    # No bound binds here: std(A_info over the 10 masked tokens) < 1 <= max(std(A_ext), 1).
    bounded = compute(
        rewards, mask, HAND_UIDS, beta=beta, gate_temperature=temperature, normalization="token", eps=EPS,
        magnitude_bound=True,
    )
    torch.testing.assert_close(bounded.double(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("compute", [run_estimator, run_oracle], ids=["implementation", "oracle"])
def test_hand_case_magnitude_bound_binds(compute):
    # norm_adv_by_std_in_grpo false, so A_ext = R - mean and A_info = r - mean, and the bound can bind.
    #   row 0: mask 1 1 1 1 1 1 1 1 0 1   turn [0,7] r = 4 at 7, final [9,9] R = 1
    #   row 1: mask 1 0 1 0 0 0 0 0 0 0   turn [0]   r = 0 at 0, final [2,2] R = 0
    rewards_rows = [[0.0] * 7 + [4.0, 0.0, 1.0], [0.0] * 10]
    mask_rows = [[1] * 8 + [0, 1], [1, 0, 1] + [0] * 7]
    rewards, mask = tensors(rewards_rows, mask_rows)
    # A_ext = +-0.5. Over the 11 masked tokens: nine of +0.5, two of -0.5: mean 7/22,
    #   var = (9 * (4/22)^2 + 2 * (18/22)^2) / 10 = (144 + 648) / 4840, std ~ 0.4045 -> max(std, 1) = 1.
    # Turn pool {4, 0}: A_info = +2 (row 0 turn 0, 8 tokens), -2 (row 1 turn 0, 1 token), 0 on both final turns.
    #   Over the 11 masked tokens: eight 2, one -2, two 0: mean 14/11,
    #   var = (8 * (8/11)^2 + (36/11)^2 + 2 * (14/11)^2) / 10 = (512 + 1296 + 392) / 1210 = 20/11.
    scale = 1.0 / (math.sqrt(20 / 11) + EPS)  # ~0.7416 < 1: the bound binds
    # gate: std_g R = sqrt(0.5), T = 0.5.
    gate_value = sigmoid(-math.sqrt(0.5) / 0.5)
    beta = 0.5
    info = beta * gate_value * 2 * scale
    expected = torch.tensor(
        [[0.5 + info] * 8 + [0.0, 0.5], [-0.5 - info, 0.0, -0.5] + [0.0] * 7], dtype=torch.float64
    )
    got = compute(rewards, mask, HAND_UIDS, norm_by_std=False, beta=beta, magnitude_bound=True, eps=EPS)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0)
    # intrinsic_only: A = m * A_info (bounded), no outcome, no beta, no gate.
    expected_intrinsic = torch.tensor(
        [[2 * scale] * 8 + [0.0, 0.0], [-2 * scale] + [0.0] * 9], dtype=torch.float64
    )
    got = compute(
        rewards, mask, HAND_UIDS, norm_by_std=False, beta=beta, magnitude_bound=True, intrinsic_only=True, eps=EPS
    )
    torch.testing.assert_close(got.double(), expected_intrinsic, atol=1e-6, rtol=0)


@pytest.mark.parametrize("compute", [run_estimator, run_oracle], ids=["implementation", "oracle"])
def test_hand_case_magnitude_bound_uses_the_outcome_spread(compute):
    # The bound's numerator is max(std(A_ext), 1): here std(A_ext) > 1, so it is std(A_ext) itself.
    #   both rows: mask 1 1 0 1   turns [0,1] and final [3]
    #   row 0: r = 12 at 1, R = 4 at 3;   row 1: r = 0 at 1, R = 0 at 3;   norm_adv_by_std_in_grpo false
    rewards, mask = tensors([[0.0, 12.0, 0.0, 4.0], [0.0, 0.0, 0.0, 0.0]], [[1, 1, 0, 1], [1, 1, 0, 1]])
    # A_ext = R - 2 = +-2 on 3 masked tokens each: mean 0, var = 6 * 4 / 5 = 4.8.
    # A_info = r - 6 = +-6 on the 2 tokens of each first turn, 0 on the finals: var = 4 * 36 / 5 = 28.8.
    scale = math.sqrt(4.8) / (math.sqrt(28.8) + EPS)  # ~ 1 / sqrt(6)
    # gate: std_g R = sqrt((2^2 + 2^2) / 1) = sqrt(8), T = 2.
    gate_value = sigmoid(-math.sqrt(8) / 2.0)
    info = gate_value * 6 * scale  # beta = 1
    expected = torch.tensor([[2 + info, 2 + info, 0.0, 2.0], [-2 - info, -2 - info, 0.0, -2.0]], dtype=torch.float64)
    got = compute(
        rewards, mask, HAND_UIDS, norm_by_std=False, beta=1.0, gate_temperature=2.0, magnitude_bound=True, eps=EPS
    )
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("compute", [run_estimator, run_oracle], ids=["implementation", "oracle"])
def test_hand_case_singleton_groups(compute):
    #   row 0 (group "x", alone): mask 1 1 0 1 0 1; turns [0,1] r=0.5, [3] r=-0.25, final [5] R = 0.75
    #   row 1 (group "y", alone): mask 0 1 1 0 1 0; feedback first; turns [1,2] r=2, final [4]; R = 3 (at 5, mask 0)
    rewards_rows = [[0.0, 0.5, 0.0, -0.25, 0.0, 0.75], [0.0, 0.0, 2.0, 0.0, 0.0, 3.0]]
    mask_rows = [[1, 1, 0, 1, 0, 1], [0, 1, 1, 0, 1, 0]]
    rewards, mask = tensors(rewards_rows, mask_rows)
    # Singleton: A_ext = (R - 0) / (1 + eps); gate std 0 -> sigmoid(0) = 0.5 (with gate on).
    # Row 0 pool {0.5, -0.25}: mean 0.125, std sqrt(2 * 0.375^2) = 0.375 * sqrt(2) -> A_info +-0.375 / (std + eps).
    # Row 1 pool {2}: a single turn -> A_info = 0.
    z = 0.375 / (0.375 * math.sqrt(2) + EPS)
    beta = 0.4
    ext0, ext1 = 0.75 / (1 + EPS), 3.0 / (1 + EPS)
    expected = torch.tensor(
        [
            [ext0 + beta * 0.5 * z] * 2 + [0.0, ext0 - beta * 0.5 * z, 0.0, ext0],
            [0.0, ext1, ext1, 0.0, ext1, 0.0],
        ],
        dtype=torch.float64,
    )
    got = compute(rewards, mask, ["x", "y"], beta=beta, eps=EPS)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0)
    # gate: false -> gate 1 instead of 0.5.
    expected[0, :2] = ext0 + beta * z
    expected[0, 3] = ext0 - beta * z
    got = compute(rewards, mask, ["x", "y"], beta=beta, eps=EPS, gate=False)
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------------------------------
# Random batches: every mode combination, every awkward row shape.
# --------------------------------------------------------------------------------------------------------------

TIE_VALUES = [0.1, 0.3, 0.7, 1.0 / 3.0, 0.0, 1.0, -0.2]


def random_row(rng: random.Random, length: int) -> tuple[list[int], list[tuple[int, int]], int]:
    """One response_mask row, its agent turns and the position of its last response token (-1: none).

    Shapes: multi-turn dialogues (sometimes opening with feedback, sometimes ending on feedback), one-turn
    dialogues, rows with no response at all, and dialogues truncated inside an agent turn (last column is a 1).
    """
    shape = rng.choice(["dialogue", "dialogue", "dialogue", "one_turn", "all_zero", "truncated", "feedback_first"])
    if shape == "all_zero":
        return [0] * length, [], -1
    agent = shape != "feedback_first"
    max_turns = 1 if shape == "one_turn" else rng.randint(2, 6)
    if shape == "truncated":
        max_turns = length  # keep alternating until the row is full, then cut inside an agent turn
    mask: list[int] = []
    turns_made = 0
    while len(mask) < length:
        if agent and turns_made == max_turns:
            break
        run = rng.randint(1, 6) if agent else rng.randint(1, 4)
        turns_made += agent
        mask.extend([int(agent)] * run)
        agent = not agent
    mask = mask[:length]
    if shape == "truncated":
        last_one = max(k for k, v in enumerate(mask) if v)
        mask = mask[: last_one + 1]
        mask += [1] * (length - len(mask))  # the final turn runs into the last column
    elif rng.random() < 0.3:
        mask = (mask + [0] * rng.randint(1, 3))[:length]  # the dialogue ends on feedback
    last_token = len(mask) - 1
    mask += [0] * (length - len(mask))  # right padding
    return mask, agent_turns(mask), last_token


def random_info_gain(rng: random.Random, spread: float = 1.0) -> float:
    kind = rng.random()
    if kind < 0.25:
        return 0.0  # turn not eligible (no feedback or no next turn)
    if kind < 0.45:
        return rng.choice([0.5, -0.25, 0.1, 0.3])  # repeats: ties inside a turn pool
    return rng.gauss(0.0, spread)


def random_batch(rng: random.Random):
    """rewards (bs, T) float32, response_mask (bs, T), uids: several groups, shuffled like verl's balance_batch."""
    length = rng.randint(6, 36)
    spread = rng.choice([1.0, 10.0])  # large r_t: makes the magnitude bound bind without std division
    rows_rewards, rows_mask, uids = [], [], []
    for group in range(rng.randint(1, 5)):
        size = rng.choice([1, 1, 2, 3, 4, 5, 8])
        tied = rng.random() < 0.35
        tie_value = rng.choice(TIE_VALUES)
        for _ in range(size):
            mask, turns, last_token = random_row(rng, length)
            rewards = [0.0] * length
            for _, last in turns[:-1]:
                rewards[last] = random_info_gain(rng, spread)
            outcome = tie_value if tied else rng.choice([0.0, 1.0, rng.random(), rng.choice(TIE_VALUES)])
            if last_token >= 0:
                rewards[last_token] += outcome
            elif outcome != 0.0:
                rewards[length - 1] += outcome  # an empty (all-masked-out) row can still carry a score
            if not tied and rng.random() < 0.2:
                # A stray reward anywhere that is not a non-final turn end still belongs to R.
                free = [k for k in range(length) if k not in {last for _, last in turns[:-1]}]
                rewards[rng.choice(free)] += rng.gauss(0.0, 0.5)
            rows_rewards.append(rewards)
            rows_mask.append(mask)
            uids.append(f"prompt-{group}")
    order = list(range(len(uids)))
    rng.shuffle(order)
    rewards = torch.tensor([rows_rewards[i] for i in order], dtype=torch.float32)
    mask_dtype = rng.choice([torch.int64, torch.float32])
    mask = torch.tensor([rows_mask[i] for i in order], dtype=mask_dtype)
    return rewards, mask, [uids[i] for i in order]


MODES = list(itertools.product(["turn", "token"], [False, True], [True, False], [False, True], [True, False]))


@pytest.mark.parametrize(
    "normalization, magnitude_bound, gate, intrinsic_only, norm_by_std",
    MODES,
    ids=[
        f"{n}-{'bound' if b else 'nobound'}-{'gate' if g else 'nogate'}-{'intrinsic' if i else 'fused'}-"
        f"{'std' if s else 'nostd'}"
        for n, b, g, i, s in MODES
    ],
)
def test_random_batches_match_oracle(normalization, magnitude_bound, gate, intrinsic_only, norm_by_std):
    rng = random.Random(MODES.index((normalization, magnitude_bound, gate, intrinsic_only, norm_by_std)))
    trials = binding = 0
    while trials < 12:
        rewards, mask, uids = random_batch(rng)
        if magnitude_bound and mask.sum() < 2:
            continue  # the batch-wide std needs at least two masked tokens
        settings = dict(
            beta=rng.choice([0.0, 0.1, 0.5, 1.0]),
            gate_temperature=rng.choice([0.05, 0.5, 2.0]),
            eps=rng.choice([1e-6, 1e-3]),
            normalization=normalization,
            magnitude_bound=magnitude_bound,
            gate=gate,
            intrinsic_only=intrinsic_only,
            norm_by_std=norm_by_std,
        )
        got, expected = both(rewards, mask, uids, **settings)
        torch.testing.assert_close(
            got, expected, atol=ATOL, rtol=RTOL, msg=lambda m: f"{m}\nsettings={settings}\nuids={uids}\nmask={mask}"
        )
        trials += 1
        if magnitude_bound:
            infopo = {k: v for k, v in settings.items() if k != "norm_by_std"}
            config = algorithm_config(norm_by_std, **infopo)
            binding += breakdown_from_config(rewards, mask, np.array(uids, dtype=object), config).info_scale < 1
    print(f"magnitude bound binding in {binding} of {trials} batches")
    if magnitude_bound and not norm_by_std:
        assert binding >= 2  # otherwise these trials never exercised the bound


def test_random_batches_cover_the_awkward_shapes():
    """The generator must really produce what the random comparisons claim to cover, or they prove little."""
    rng = random.Random(0)
    seen = dict.fromkeys(
        ["singleton group", "tied group", "all-zero row", "truncated row", "feedback first", "one-turn row",
         "no eligible turn", "ends on feedback"],
        0,
    )
    for _ in range(60):
        rewards, mask, uids = random_batch(rng)
        mask_rows = mask.tolist()
        for uid in set(uids):
            members = [i for i, u in enumerate(uids) if u == uid]
            seen["singleton group"] += len(members) == 1
            outcomes = set()
            for i in members:
                intrinsic_positions = [last for _, last in agent_turns(mask_rows[i])[:-1]]
                outcomes.add(sum(v for k, v in enumerate(rewards[i].tolist()) if k not in intrinsic_positions))
            seen["tied group"] += len(members) > 1 and len(outcomes) == 1
        for i, row in enumerate(mask_rows):
            turns = agent_turns(row)
            seen["all-zero row"] += not turns
            seen["truncated row"] += bool(row[-1])
            seen["feedback first"] += bool(turns) and row[0] == 0
            seen["one-turn row"] += len(turns) == 1
            seen["no eligible turn"] += len(turns) > 1 and all(rewards[i, last] == 0 for _, last in turns[:-1])
            seen["ends on feedback"] += bool(turns) and rewards[i].nonzero().numel() > 0 and (
                mask_rows[i][int(rewards[i].nonzero().max())] == 0
            )
    assert all(count >= 3 for count in seen.values()), seen


# --------------------------------------------------------------------------------------------------------------
# Tied groups: exactly zero outcome advantage, never "total minus intrinsic".
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie_value", [0.1, 0.3, 0.7, 1.0 / 3.0, 2.2])
@pytest.mark.parametrize("normalization", ["turn", "token"])
def test_tied_groups_have_exactly_zero_outcome_advantage(tie_value, normalization):
    """SPEC: R is summed on its own; total minus r_t leaves a rounding residue that (std + eps) turns into ~1e-2.

    The r_t values are large and non-dyadic so that (R + r_0 + r_1) - r_0 - r_1 != R even in float64.
    """
    rng = random.Random(7)
    length, group_size = 12, 5
    mask_rows = [[1, 1, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0] for _ in range(group_size)]  # turns [0,1] [3,5] [8,9]
    rewards_rows = []
    for _ in range(group_size):
        row = [0.0] * length
        row[1] = rng.uniform(-3e9, 3e9) + 0.1
        row[5] = rng.uniform(-0.9, 0.9)
        row[9] = tie_value
        rewards_rows.append(row)
    rewards, mask = tensors(rewards_rows, mask_rows)
    uids = ["tied"] * group_size
    # Probe: the trap really is a trap for these numbers.
    totals = rewards.double().sum(-1) - rewards.double()[:, 1] - rewards.double()[:, 5]
    assert (totals != torch.tensor(tie_value, dtype=torch.float32).double()).any()

    grpo_only = run_estimator(rewards, mask, uids, beta=0.0, normalization=normalization)
    assert torch.equal(grpo_only, torch.zeros_like(grpo_only))

    config = algorithm_config(beta=0.5, normalization=normalization)
    breakdown = breakdown_from_config(rewards, mask, np.array(uids, dtype=object), config)
    assert torch.equal(breakdown.outcome_advantage, torch.zeros(group_size, dtype=breakdown.outcome_advantage.dtype))
    assert torch.equal(breakdown.gate, torch.full((group_size,), 0.5, dtype=breakdown.gate.dtype))  # sigmoid(0)
    got, expected = both(rewards, mask, uids, beta=0.5, normalization=normalization)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=RTOL)


# --------------------------------------------------------------------------------------------------------------
# beta 0 is verl's GRPO.
# --------------------------------------------------------------------------------------------------------------


# verl's GRPO works in float32 (mean, std, division); the estimator works in float64 and rounds once. Where
# verl's own arithmetic is exact (dyadic outcomes, group sizes 1/2/4/8, no std division) the two agree to the
# bit; elsewhere (e.g. G = 5 with outcomes in {0, 1}: std and mean 0.4 are inexact in float32) verl's result
# carries up to ~2 float32 ulp of its own rounding, so the comparison allows exactly that much.
GRPO_ULP_RTOL = 2.5e-7


def grpo_batch(
    rng: random.Random, with_info_gain: bool, group_sizes=(1, 2, 3, 4, 5, 8), values=None, allow_empty: bool = True
):
    """Outcome-only (or outcome + r_t at turn ends) batch; outcomes from small dyadic sets. ``allow_empty`` false
    redraws all-zero-mask rows, so each group keeps exactly its drawn size of trained rows."""
    length = 16
    rows_rewards, rows_mask, uids = [], [], []
    for group in range(6):
        size = rng.choice(group_sizes)
        outcome_values = values or rng.choice([[0.0, 1.0], [0.0, 0.25, 0.5, 0.75, 1.0], [1.0], [-1.0, 0.5, 2.0]])
        for _ in range(size):
            mask, turns, last_token = random_row(rng, length)
            while not allow_empty and not turns:
                mask, turns, last_token = random_row(rng, length)
            rewards = [0.0] * length
            if with_info_gain:
                for _, last in turns[:-1]:
                    rewards[last] = random_info_gain(rng)
            rewards[max(last_token, 0)] += rng.choice(outcome_values)
            rows_rewards.append(rewards)
            rows_mask.append(mask)
            uids.append(f"g{group}")
    return tensors(rows_rewards, rows_mask) + (np.array(uids, dtype=object),)


def verl_grpo_on_trained_rows(rewards, mask, uids, norm_adv_by_std_in_grpo: bool) -> torch.Tensor:
    """verl's GRPO over the rows that carry a loss; 0 on all-zero-mask rows (which verl's GRPO would count)."""
    trained = mask.any(dim=-1)
    expected = torch.zeros_like(rewards)
    if trained.any():
        expected[trained], _ = compute_grpo_outcome_advantage(
            rewards[trained], mask[trained], uids[trained.numpy()], norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo
        )
    return expected


def without_info_gain(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The rewards with every r_t (last token of each non-final agent turn) set to 0."""
    outcome_only = rewards.clone()
    for i, row in enumerate(mask.tolist()):
        for _, last in agent_turns(row)[:-1]:
            outcome_only[i, last] = 0.0
    return outcome_only


@pytest.mark.parametrize("with_info_gain", [False, True], ids=["outcome-only", "with-r_t"])
@pytest.mark.parametrize("normalization", ["turn", "token"])
def test_beta_zero_is_verl_grpo_bit_for_bit_where_verl_is_exact(normalization, with_info_gain):
    rng = random.Random(10)
    for _ in range(10):
        rewards, mask, uids = grpo_batch(rng, with_info_gain, group_sizes=(1, 2, 4, 8), allow_empty=False)
        expected = verl_grpo_on_trained_rows(without_info_gain(rewards, mask), mask, uids, False)
        got = run_estimator(rewards, mask, list(uids), norm_by_std=False, beta=0.0, normalization=normalization)
        assert torch.equal(got, expected), (got - expected).abs().max()


@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("with_info_gain", [False, True], ids=["outcome-only", "with-r_t"])
@pytest.mark.parametrize("normalization", ["turn", "token"])
def test_beta_zero_is_verl_grpo(normalization, with_info_gain, norm_by_std):
    """beta 0 is GRPO; with r_t present it is GRPO on the rewards with every r_t removed (SPEC section 1), over
    the rows that carry a loss (all-zero-mask rows are out of every statistic)."""
    rng = random.Random(11)
    for _ in range(10):
        rewards, mask, uids = grpo_batch(rng, with_info_gain)
        outcome_only = without_info_gain(rewards, mask)
        assert with_info_gain != torch.equal(outcome_only, rewards)  # the batch carries r_t exactly when asked
        expected = verl_grpo_on_trained_rows(outcome_only, mask, uids, norm_by_std)
        got = run_estimator(rewards, mask, list(uids), norm_by_std=norm_by_std, beta=0.0, normalization=normalization)
        torch.testing.assert_close(got, expected, rtol=GRPO_ULP_RTOL, atol=1e-7)


# --------------------------------------------------------------------------------------------------------------
# Reached through verl: the trainer's compute_advantage and the v1 trainer's multi-trajectory path.
# --------------------------------------------------------------------------------------------------------------


def verl_algorithm_section(norm_by_std: bool = True, **infopo):
    """verl's real default ``algorithm`` section (from its generated trainer yaml) with InfoPO selected."""
    generated = Path(verl.__file__).parent / "trainer" / "config" / "_generated_ppo_trainer.yaml"
    algorithm = OmegaConf.load(generated).algorithm
    algorithm.adv_estimator = "infopo"
    algorithm.norm_adv_by_std_in_grpo = norm_by_std
    algorithm.infopo = infopo
    return algorithm


def data_proto(rewards, mask, uids) -> DataProto:
    return DataProto.from_dict(
        tensors={"token_level_rewards": rewards, "response_mask": mask},
        non_tensors={"uid": np.array(uids, dtype=object)},
    )


@pytest.mark.parametrize(
    "norm_by_std, infopo",
    [
        (True, {}),
        (True, {"beta": 0.3, "gate_temperature": 0.5}),
        (False, {"beta": 1.0, "gate_temperature": 0.05, "gate": False}),
        (True, {"beta": 0.5, "normalization": "token", "magnitude_bound": True}),
        (True, {"intrinsic_only": True, "normalization": "token"}),
    ],
)
def test_reached_through_verl_compute_advantage(norm_by_std, infopo):
    rng = random.Random(21)
    settings = {"beta": 0.5, "gate_temperature": 0.5, **infopo}  # the InfoPOConfig defaults the SPEC table gives
    for _ in range(4):
        rewards, mask, uids = random_batch(rng)
        expected = run_oracle(rewards, mask, uids, norm_by_std=norm_by_std, **settings)
        config = verl_algorithm_section(norm_by_std, **infopo)

        data = compute_advantage(data_proto(rewards, mask, uids), adv_estimator=config.adv_estimator, config=config)
        torch.testing.assert_close(data.batch["advantages"].double(), expected, atol=ATOL, rtol=RTOL)
        assert torch.equal(data.batch["returns"], data.batch["advantages"])

        # v1 trainer: batch keys are "{uid}_{session_id}_{index}"; a non-GRPO estimator sees every row.
        batch_keys = [f"{uid}_0_{i}" for i, uid in enumerate(uids)]
        data = compute_advantage_for_multi_trajectories(
            data_proto(rewards, mask, uids),
            batch_keys=batch_keys,
            adv_estimator=config.adv_estimator,
            gamma=config.gamma,
            lam=config.lam,
            num_repeat=4,
            norm_adv_by_std_in_grpo=config.norm_adv_by_std_in_grpo,
            config=config,
        )
        torch.testing.assert_close(data.batch["advantages"].double(), expected, atol=ATOL, rtol=RTOL)
        assert torch.equal(data.batch["returns"], data.batch["advantages"])


# --------------------------------------------------------------------------------------------------------------
# Rows without a loss (all-zero response_mask) change nothing for the others.
# --------------------------------------------------------------------------------------------------------------


def with_zero_mask_rows(rng: random.Random, rewards, mask, uids):
    """The batch plus rows whose response_mask is all zero, shuffled in: verl's padding rows (uid ``pad_<k>``, zero
    rewards) and failed dialogues (a real group's uid, nonzero rewards where their turns and outcome had been).
    Returns the bigger batch and the index of every original row in it."""
    length = rewards.shape[1]
    extra_rewards, extra_uids = [], []
    for k in range(rng.randint(1, 3)):  # padding rows: zero mask, zero rewards
        extra_rewards.append([0.0] * length)
        extra_uids.append(f"pad_{k}")
    for _ in range(rng.randint(1, 4)):  # failed dialogues: zero mask, stale r_t and outcome left in the rewards
        row = [0.0] * length
        for position in rng.sample(range(length), rng.randint(1, min(3, length))):
            row[position] = rng.choice([1.0, -0.5, rng.gauss(0.0, 2.0)])
        extra_rewards.append(row)
        extra_uids.append(rng.choice(uids))
    all_rewards = torch.cat([rewards, torch.tensor(extra_rewards, dtype=rewards.dtype)])
    all_mask = torch.cat([mask, torch.zeros((len(extra_uids), length), dtype=mask.dtype)])
    all_uids = list(uids) + extra_uids
    order = list(range(len(all_uids)))
    rng.shuffle(order)
    position_of = {old: new for new, old in enumerate(order)}
    return (
        all_rewards[order],
        all_mask[order],
        [all_uids[i] for i in order],
        [position_of[i] for i in range(len(uids))],
    )


@pytest.mark.parametrize(
    "infopo",
    [
        {},
        {"gate": False, "beta": 1.0},
        {"normalization": "token", "magnitude_bound": True},
        {"normalization": "turn", "magnitude_bound": True, "beta": 0.3},
        {"intrinsic_only": True},
    ],
    ids=["default", "nogate", "token-bound", "turn-bound", "intrinsic"],
)
def test_zero_mask_rows_are_left_out_of_every_statistic(infopo):
    """A padding row or a failed dialogue (all-zero mask) gets A = 0 and leaves every other row's A unchanged, to
    the bit, through verl's compute_advantage; the oracle agrees on the bigger batch."""
    rng = random.Random(31)
    config = verl_algorithm_section(**infopo)
    checked = 0
    while checked < 8:
        rewards, mask, uids = random_batch(rng)
        keep = mask.any(dim=-1)  # the generator's own all-zero rows are covered by the oracle comparisons
        rewards, mask, uids = rewards[keep], mask[keep], [uid for uid, k in zip(uids, keep.tolist()) if k]
        if len(uids) < 2:
            continue
        big_rewards, big_mask, big_uids, original_rows = with_zero_mask_rows(rng, rewards, mask, uids)
        alone = compute_advantage(data_proto(rewards, mask, uids), adv_estimator="infopo", config=config)
        mixed = compute_advantage(data_proto(big_rewards, big_mask, big_uids), adv_estimator="infopo", config=config)

        assert torch.equal(mixed.batch["advantages"][original_rows], alone.batch["advantages"])
        zero_rows = [i for i in range(len(big_uids)) if i not in set(original_rows)]
        assert torch.equal(mixed.batch["advantages"][zero_rows], torch.zeros(len(zero_rows), rewards.shape[1]))
        assert big_rewards[zero_rows].abs().sum() > 0  # the failed rows really did carry rewards
        settings = {"beta": 0.5, "gate_temperature": 0.5, **infopo}
        expected = run_oracle(big_rewards, big_mask, big_uids, **settings)
        torch.testing.assert_close(mixed.batch["advantages"].double(), expected, atol=ATOL, rtol=RTOL)
        checked += 1


def test_zero_mask_rows_leave_a_group_of_one_a_singleton():
    """Group "a": one trained row (R = 1) and one failed row (R = 5 left in its rewards). The trained row alone is
    a singleton: A_ext = (1 - 0) / (1 + eps), gate sigmoid(0) = 0.5; with the failed row counted it would be
    (1 - 3) / (std(1, 5) + eps) instead."""
    rewards, mask = tensors([[0.0, 0.0, 1.0], [0.0, 0.0, 5.0]], [[1, 1, 1], [0, 0, 0]])
    breakdown = breakdown_from_config(rewards, mask, np.array(["a", "a"], dtype=object), algorithm_config())
    assert breakdown.trained.tolist() == [True, False]
    assert breakdown.outcome_advantage[0].item() == pytest.approx(1.0 / (1.0 + EPS), abs=1e-12)
    assert breakdown.gate[0].item() == 0.5
    assert torch.equal(breakdown.advantages[1], torch.zeros(3))


# --------------------------------------------------------------------------------------------------------------
# Config errors name the full key.
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithm_overrides, infopo, key",
    [
        ({"use_kl_in_reward": True}, {}, "algorithm.use_kl_in_reward"),
        ({}, {"normalization": "sequence"}, "algorithm.infopo.normalization"),
        ({}, {"gate_temperature": 0.0}, "algorithm.infopo.gate_temperature"),
        ({}, {"gate_temperature": -0.5}, "algorithm.infopo.gate_temperature"),
        ({}, {"beta": -0.1}, "algorithm.infopo.beta"),
        ({}, {"betta": 0.5}, "algorithm.infopo.betta"),
        ({}, {"beta": True}, "algorithm.infopo.beta"),
        ({}, {"gate_temperature": False}, "algorithm.infopo.gate_temperature"),
        ({}, {"eps": True}, "algorithm.infopo.eps"),
    ],
)
def test_config_errors_name_the_key(algorithm_overrides, infopo, key):
    rewards, mask = tensors(HAND_REWARDS, HAND_MASK)
    config = verl_algorithm_section(**infopo)
    for name, value in algorithm_overrides.items():
        config[name] = value
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compute_advantage(data_proto(rewards, mask, HAND_UIDS), adv_estimator="infopo", config=config)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compute_infopo_advantage(rewards, mask, np.array(HAND_UIDS, dtype=object), config=OmegaConf.to_container(config))


# --------------------------------------------------------------------------------------------------------------
# Registration: a bare `import verl` in a fresh process is enough (the verl.plugins entry point).
# --------------------------------------------------------------------------------------------------------------


def test_registered_by_a_bare_import_verl_in_a_fresh_process():
    script = textwrap.dedent(
        """
        import sys
        import verl
        from verl.trainer.ppo.core_algos import get_adv_estimator_fn
        registered = get_adv_estimator_fn("infopo")   # looked up before this script imports the plugin itself
        assert "infopo_verl.plugin" in sys.modules, "import verl did not load the verl.plugins entry point"
        from infopo_verl.estimator import compute_infopo_advantage
        assert registered is compute_infopo_advantage, registered
        print("registered", registered.__module__, registered.__name__)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered infopo_verl.estimator compute_infopo_advantage" in result.stdout
    assert get_adv_estimator_fn("infopo") is compute_infopo_advantage  # and in this process too
