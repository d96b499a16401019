"""Cost of the ``infopo`` advantage estimator next to verl's GRPO estimator on one realistic batch.

The batch is the shape of a paper-sized step (1024 rollouts = 128 prompts x rollout.n 8, 8192 response tokens):
every rollout is a multi-turn dialogue of agent turns separated by user feedback, r_t on the last token of every
non-final agent turn and the outcome on the last response token (SPEC section 2). Both estimators run on the
same tensors in the same process, after a warm-up, and the median of several repeats is reported, so the ratio
is comparable across machines even when the absolute times are not. Goal: infopo / grpo <= 1.1.

Run: ``python benchmarks/bench_estimator.py``. It prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

from infopo_verl.estimator import compute_infopo_advantage

PROMPTS = 128
ROLLOUTS_PER_PROMPT = 8
RESPONSE_LENGTH = 8192


def build_batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """(token_level_rewards (bs, L) float32, response_mask (bs, L) int64, uid (bs,) object) for a dialogue batch.

    Turn and feedback lengths are drawn so that dialogues have about 2-10 agent turns; some run into the length
    limit (truncated mid-turn), the rest are right-padded. Rows are shuffled like verl's balance_batch does.
    """
    generator = np.random.default_rng(seed)
    batch_size = PROMPTS * ROLLOUTS_PER_PROMPT
    mask = np.zeros((batch_size, RESPONSE_LENGTH), dtype=np.int64)
    rewards = np.zeros((batch_size, RESPONSE_LENGTH), dtype=np.float32)
    for row in range(batch_size):
        turns = int(generator.integers(2, 11))
        position = 0
        turn_ends = []
        for turn in range(turns):
            turn_length = int(generator.integers(20, 700))
            end = min(position + turn_length, RESPONSE_LENGTH)
            mask[row, position:end] = 1
            turn_ends.append(end - 1)
            position = end + int(generator.integers(30, 400))  # the user's / environment's feedback
            if position >= RESPONSE_LENGTH:
                break
        for end in turn_ends[:-1]:
            eligible = generator.random() < 0.85  # some turns got no feedback worth scoring: r_t = 0
            rewards[row, end] = generator.normal(0.05, 0.3) if eligible else 0.0
        rewards[row, turn_ends[-1]] += float(generator.random() < 0.3)  # 0/1 outcome
    uid = np.repeat(np.array([f"prompt-{p}" for p in range(PROMPTS)], dtype=object), ROLLOUTS_PER_PROMPT)
    order = generator.permutation(batch_size)
    return torch.from_numpy(rewards[order]), torch.from_numpy(mask[order]), uid[order]


def median_seconds(cases: dict, repeats: int, warmup: int) -> dict[str, float]:
    """Median wall time of each case. Repeats are interleaved (one of each case per round) so that a load change
    on a shared machine hits every case alike instead of skewing the ratio."""
    for _ in range(warmup):
        for run in cases.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, run in cases.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)

    rewards, mask, uid = build_batch()
    turns = int(((mask[:, 1:] == 1) & (mask[:, :-1] == 0)).sum() + (mask[:, 0] == 1).sum())
    print(
        f"batch: {rewards.shape[0]} x {rewards.shape[1]} ({PROMPTS} groups of {ROLLOUTS_PER_PROMPT}), "
        f"{turns} agent turns, {int(mask.sum())} agent tokens, torch threads {torch.get_num_threads()}"
    )

    algorithm_turn = {"norm_adv_by_std_in_grpo": True, "infopo": {"beta": 0.5, "gate_temperature": 0.5}}
    algorithm_token = {
        "norm_adv_by_std_in_grpo": True,
        "infopo": {"beta": 0.5, "gate_temperature": 0.5, "normalization": "token", "magnitude_bound": True},
    }
    cases = {
        "grpo (verl compute_grpo_outcome_advantage)": lambda: compute_grpo_outcome_advantage(rewards, mask, uid),
        "infopo turn": lambda: compute_infopo_advantage(rewards, mask, uid, config=algorithm_turn),
        "infopo token + magnitude_bound": lambda: compute_infopo_advantage(rewards, mask, uid, config=algorithm_token),
    }
    seconds = median_seconds(cases, arguments.repeats, arguments.warmup)
    grpo = seconds["grpo (verl compute_grpo_outcome_advantage)"]
    for name, value in seconds.items():
        print(f"{name:45s} median {value * 1e3:8.1f} ms   ratio to grpo {value / grpo:5.2f}x")


if __name__ == "__main__":
    main()
