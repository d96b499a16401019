"""Cost of information-gain scoring, in tokens submitted to the inference server, against the released scheme.

The released reference code scores each eligible turn with two full forward passes over the prefix up to the
end of a_{t+1} (factual and counterfactual), i.e. 2 * (prompt + response up to a_{t+1}) tokens per turn. The
plugin sends one counterfactual request per turn (context, placeholder message, a_{t+1}) and, only when the
rollout's log-probs are not the raw ones (temperature != 1 with verl's default processed log-probs), one factual
request per dialogue. This script rolls out real clarify dialogues through verl's workers on the CPU (see
``infopo_verl.local.pipeline``), counts both, and prints the ratio (target: at most 0.5 at temperature 1).

It also checks that scoring adds no user or environment calls: the same dialogues are rolled out with
``algorithm.infopo.info_gain=false`` and the number of environment steps and user replies is compared.

    .venv/bin/python benchmarks/bench_scoring_cost.py [--prompts 4] [--rollouts 4]
"""

from __future__ import annotations

import argparse

from infopo_verl.demo import DEFAULT_OVERRIDES
from infopo_verl.envs.clarify import generate_rows
from infopo_verl.local.pipeline import run_dialogues
from infopo_verl.local.tiny import trained_model
from infopo_verl.rollout.record import RolloutRecord



def cost(batch) -> tuple[int, int, int]:
    """(tokens the plugin submitted, tokens the released scheme would submit, measured turns)."""
    submitted = reference = measured = 0
    attention = batch.batch["attention_mask"]
    prompt_width = batch.batch["prompts"].shape[1]
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        prompt_length = int(attention[row, :prompt_width].sum())
        submitted += record.scoring_tokens
        for turn, gain in enumerate(record.info_gain):
            if gain is not None:
                next_end = record.turn_spans[turn + 1][1]
                reference += 2 * (prompt_length + next_end + 1)
                measured += 1
    return submitted, reference, measured


def interactions(batch) -> tuple[int, int]:
    """(environment steps, feedback messages) over the batch, as the rollout counted them."""
    records = [RolloutRecord.from_batch(batch.non_tensor_batch, row) for row in range(len(batch))]
    steps = sum(record.env_steps for record in records)
    replies = sum(text is not None for record in records for text in record.feedback_texts)
    return steps, replies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=4)
    args = parser.parse_args()
    model_path = trained_model()
    rows = generate_rows(args.prompts, seed=11, split="test")
    settings = [*DEFAULT_OVERRIDES, f"actor_rollout_ref.rollout.n={args.rollouts}"]
    for temperature in (1.0, 0.6):
        _, batch = run_dialogues(model_path, rows, [*settings, f"actor_rollout_ref.rollout.temperature={temperature}"])
        submitted, reference, measured = cost(batch)
        print(
            f"temperature {temperature}: {measured} measured turns, {submitted / max(measured, 1):.1f} tokens "
            f"submitted per turn vs {reference / max(measured, 1):.1f} for the released scheme: "
            f"ratio {submitted / max(reference, 1):.3f}"
        )
        if temperature == 1.0:
            baseline_settings = [*settings, "algorithm.infopo.info_gain=false", "algorithm.adv_estimator=grpo"]
            _, baseline = run_dialogues(model_path, rows, baseline_settings)
            with_scoring, without = interactions(batch), interactions(baseline)
            print(f"  environment steps / feedback messages with scoring {with_scoring}, without {without}: "
                  f"{'identical' if with_scoring == without else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
