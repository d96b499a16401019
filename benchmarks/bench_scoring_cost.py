"""Prefill tokens that information-gain scoring makes the engine compute, per scored turn, against two baselines.

- **released**: the released reference code's scheme, two full forward passes per eligible turn over the prefix up
  to the end of a_{t+1} (factual and counterfactual): 2 * (prompt + response through a_{t+1}) tokens, by arithmetic.
- **today** (``algorithm.infopo.scoring.prefix_cache=false``, the default): one uncached counterfactual request per
  turn (context, placeholder message, a_{t+1}), plus one factual rescoring request per dialogue when the factual
  side is rescored. vLLM recomputes every token of a prompt-logprob request.
- **cached** (``prefix_cache=true``): the counterfactual request reads the context from vLLM's prefix cache.

Token counts are what vLLM would compute, from :class:`~infopo_verl.local.server.LocalLLMServer`'s model of
automatic prefix caching (16-token blocks, full blocks only, the guard's resends included; see its docstring). Two
kinds of dialogues:

1. **clarify**: real dialogues of the built-in task rolled out through verl's workers by the tiny trained model
   (short prompts, 2-4 turns);
2. **long** (UserGym-length, synthetic): a 1000-token prompt, 8 agent turns of 200 sampled tokens, 150-token
   feedback, a 15-token placeholder (7 scored turns, 3650 tokens: the tiny model's 4096 positions do not fit the
   issue's 8 x 300 + 200 example). Token ids are random, turns are sampled by the tiny model; scoring goes through
   the same :class:`~infopo_verl.rollout.scoring.DialogueScorer` the rollout uses.

Settings: temperature 1 (factual from the rollout), 0.6 with ``logprobs_mode=raw_logprobs`` (factual from the
rollout, exact), 0.6 with verl's default ``processed_logprobs`` (factual rescored). It also prints the largest
|r_t(cached) - r_t(today)| over the same dialogues. Goals (issue): cached <= 0.15 x released on clarify and
<= 0.05 on the long dialogues with the factual from the rollout; with rescore, printed and no worse than today.

    .venv/bin/python benchmarks/bench_scoring_cost.py [--prompts 4] [--rollouts 4] [--long-dialogues 3] \
        [--only clarify|long] [--model DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import random

from infopo_verl.demo import DEFAULT_OVERRIDES
from infopo_verl.envs.clarify import generate_rows
from infopo_verl.local.pipeline import LocalPipeline, compose_config, load_batch
from infopo_verl.local.server import LocalLLMServer
from infopo_verl.local.tiny import trained_model
from infopo_verl.rollout.record import RolloutRecord
from infopo_verl.rollout.scoring import DialogueScorer, ScoringTurn, resolve_factual_source

SETTINGS = (  # (label, temperature, logprobs_mode)
    ("T=1.0", 1.0, "processed_logprobs"),
    ("T=0.6 raw_logprobs", 0.6, "raw_logprobs"),
    ("T=0.6 rescore", 0.6, "processed_logprobs"),
)
LONG = {"prompt": 1000, "turns": 8, "turn_tokens": 200, "feedback": 150, "placeholder": 15}


def scoring_prefill(server: LocalLLMServer) -> int:
    return sum(record.computed_prefill_tokens for record in server.requests_log if record.prompt_logprobs)


def clarify(model_path, rows, overrides, temperature, mode, prefix_cache):
    """(info gains per dialogue, released tokens, computed scoring tokens, scored turns) for one clarify batch."""
    config = compose_config(model_path, [
        *overrides, f"actor_rollout_ref.rollout.temperature={temperature}",
        f"actor_rollout_ref.rollout.logprobs_mode={mode}", f"algorithm.infopo.scoring.prefix_cache={prefix_cache}",
    ])
    rollout = config.actor_rollout_ref.rollout
    server = LocalLLMServer(model_path, rollout.prompt_length + rollout.response_length, seed=0, logprobs_mode=mode)
    import tempfile
    from pathlib import Path

    import pandas as pd

    with tempfile.TemporaryDirectory() as scratch:
        data_file = Path(scratch) / "rows.parquet"
        pd.DataFrame(rows).to_parquet(data_file)
        pipeline = LocalPipeline(config, server)
        try:
            batch = pipeline.rollout(load_batch(config, [data_file], pipeline.tokenizer))
        finally:
            pipeline.close()
    released = scored = 0
    gains = {}
    attention, width = batch.batch["attention_mask"], batch.batch["prompts"].shape[1]
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        prompt_length = int(attention[row, :width].sum())
        gains[(batch.non_tensor_batch["extra_info"][row]["index"], tuple(record.agent_texts))] = record.info_gain
        for turn, gain in enumerate(record.info_gain):
            if gain is not None:
                released += 2 * (prompt_length + record.turn_spans[turn + 1][1] + 1)
                scored += 1
    return gains, released, scoring_prefill(server), scored


async def long_dialogue(server, seed, temperature, source, prefix_cache):
    """One synthetic UserGym-length dialogue; returns (info gains, released tokens, scored turns)."""
    rng = random.Random(seed)
    vocab = server.model.config.vocab_size
    draw = lambda count: [rng.randrange(10, vocab) for _ in range(count)]  # noqa: E731
    ids, placeholder = draw(LONG["prompt"]), draw(LONG["placeholder"])
    request_id = f"long-{seed}"
    scorer = DialogueScorer(server, request_id, server.max_model_len, source=source, prefix_cache=prefix_cache)
    counterfactual_prefix, released = None, 0
    for turn in range(LONG["turns"]):
        output = await server.generate(request_id, prompt_ids=ids, sampling_params={
            "max_tokens": LONG["turn_tokens"], "ignore_eos": True, "temperature": temperature, "logprobs": True,
            "seed": seed * 100 + turn})
        start, ids = len(ids), ids + list(output.token_ids)
        if counterfactual_prefix is not None:
            scorer.submit(ScoringTurn(turn - 1, counterfactual_prefix, start, list(output.token_ids), output.log_probs))
            released += 2 * len(ids)
        if turn < LONG["turns"] - 1:
            counterfactual_prefix = ids + placeholder
            ids = ids + draw(LONG["feedback"])
    result = await scorer.finish(ids)
    return result.info_gain, released, LONG["turns"] - 1


def long_dialogues(model_path, count, temperature, mode, prefix_cache):
    server = LocalLLMServer(model_path, 4096, seed=0, logprobs_mode=mode)
    source = resolve_factual_source("auto", {"temperature": temperature}, mode)

    async def run_all():
        return await asyncio.gather(*(long_dialogue(server, seed, temperature, source, prefix_cache)
                                      for seed in range(count)))

    outcomes = asyncio.run(run_all())
    gains = {seed: outcome[0] for seed, outcome in enumerate(outcomes)}
    return gains, sum(o[1] for o in outcomes), scoring_prefill(server), sum(o[2] for o in outcomes)


def largest_difference(cached, uncached) -> float:
    worst = 0.0
    for key, values in uncached.items():
        other = cached[key]
        pairs = values.items() if isinstance(values, dict) else enumerate(values)
        for turn, value in pairs:
            if value is not None:
                worst = max(worst, abs(other[turn] - value))
    return worst


def report(kind, label, runs):
    (gains_today, released, today, scored), (gains_cached, _, cached, scored_cached) = runs
    assert scored == scored_cached, "cache on and off must score the same turns"
    per_turn = lambda tokens: tokens / max(scored, 1)  # noqa: E731
    print(f"{kind:8s} {label:20s} turns {scored:3d}  released {per_turn(released):8.1f}  "
          f"today {per_turn(today):8.1f} ({today / max(released, 1):.3f})  "
          f"cached {per_turn(cached):8.1f} ({cached / max(released, 1):.3f})  "
          f"max |dr_t| {largest_difference(gains_cached, gains_today):.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--long-dialogues", type=int, default=3)
    parser.add_argument("--only", choices=("clarify", "long"), default=None, help="run one kind of dialogue")
    parser.add_argument("--model", default=None, help="model directory (default: the tiny trained model)")
    args = parser.parse_args()
    model_path = args.model or trained_model()
    rows = generate_rows(args.prompts, seed=11, split="test")
    overrides = [*DEFAULT_OVERRIDES, f"actor_rollout_ref.rollout.n={args.rollouts}"]
    print("computed prefill tokens per scored turn (ratio to the released scheme's two full passes)")
    for label, temperature, mode in SETTINGS if args.only != "long" else ():
        report("clarify", label, [clarify(model_path, rows, overrides, temperature, mode, cache) for cache in (False, True)])
    for label, temperature, mode in SETTINGS if args.only != "clarify" else ():
        report("long", label, [long_dialogues(model_path, args.long_dialogues, temperature, mode, cache)
                               for cache in (False, True)])


if __name__ == "__main__":
    main()
