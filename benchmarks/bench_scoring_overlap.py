"""Dialogue wall time with and without information-gain scoring, with the user simulator over real HTTP.

The clarify task's requester is played by an OpenAI-compatible user model (``algorithm.infopo.user.backend=openai``)
served on 127.0.0.1 by the loopback server of the tests (``tests/testkit/openai_server.py``), which answers each
question as the scripted user would, after a fixed latency (100 ms and 500 ms: a hosted model's typical range).
The policy is the tiny trained model behind :class:`~infopo_verl.local.server.LocalLLMServer`, through verl's
workers. Three rollouts of the same batch (same seeds, so the same dialogues):

- ``no scoring``: ``algorithm.infopo.info_gain=false`` (the GRPO baseline's rollout);
- ``pipelined``: scoring on (the default): turn t's request goes out when a_{t+1} exists, while the user answers;
- ``after dialogue``: ``rollout.full_determinism=true``, where a dialogue's scoring requests are sent one at a time
  after it ends (what the loop does when verl forwards request ids unchanged).

Two regimes:

- ``one at a time``: each task's dialogue rolled out alone (``rollout.n=1``), so the engine is idle while the user
  thinks, as a GPU engine with spare batch capacity is: the regime pipelining is for. InfoPO's estimator refuses
  ``n=1`` at start-up (no group statistics), so this regime names verl's GRPO estimator, for which the rollout
  scores the same turns (it writes beta * r_t): only the rollout is timed;
- ``batch``: all ``--prompts`` x ``--rollouts`` dialogues at once on the one CPU server, which runs every forward
  pass in turn (no batching): compute-bound, so scoring's compute adds to the wall time whatever the overlap.

It prints the median wall time of ``generate_sequences`` over ``--repeats`` rollouts, the ratio to ``no scoring``
(goal of the issue: <= 1.1x) and the simulator replies per rollout: equal counts say the variants rolled out the
same dialogues (``full_determinism`` may change what is sampled, so ``after dialogue`` need not). Wall time on a
shared CPU is noisy: compare ratios from one run.

    .venv/bin/python benchmarks/bench_scoring_overlap.py [--prompts 4] [--rollouts 2] [--repeats 5] [--model DIR] \
        [HYDRA_OVERRIDE ...]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from testkit.openai_server import FakeOpenAIServer  # noqa: E402

from infopo_verl.demo import DEFAULT_OVERRIDES  # noqa: E402
from infopo_verl.envs.clarify import ClarifyEnv, generate_rows  # noqa: E402
from infopo_verl.local.pipeline import LocalPipeline, compose_config, load_batch  # noqa: E402
from infopo_verl.local.server import LocalLLMServer  # noqa: E402
from infopo_verl.local.tiny import trained_model  # noqa: E402

KEY_VARIABLE = "INFOPO_BENCH_LOOPBACK_KEY"
"""The loopback server checks no key, but the openai backend refuses to start without one."""
VARIANTS = {
    "no scoring": ["algorithm.infopo.info_gain=false"],
    "pipelined": [],
    "after dialogue": ["actor_rollout_ref.rollout.full_determinism=true"],
}


def scripted_user(latency_s: float):
    """Answer as the scripted clarify user, reading the hidden details from the simulator's system prompt."""

    def respond(request: dict) -> str:
        time.sleep(latency_s)
        messages = request["messages"]
        details = re.search(r"know: (.*?)\. The assistant", messages[0]["content"]).group(1)
        slots = dict(item.split(" = ", 1) for item in details.split("; "))
        return ClarifyEnv(slots).reply(messages[-1]["content"])

    return respond


def rollout_seconds(model_path, data_files, overrides, repeats: int) -> list[float]:
    """Wall time of each of ``repeats`` rollouts of every data file's batch in turn, on one pipeline and server.

    The server's k-th sample of a prompt is the same in every run (its seeding), so repeat k rolls out the same
    dialogues in every variant: the variants are compared on identical work, repeat by repeat.
    """
    config = compose_config(model_path, overrides)
    rollout = config.actor_rollout_ref.rollout
    server = LocalLLMServer(model_path, rollout.prompt_length + rollout.response_length, seed=0)
    pipeline = LocalPipeline(config, server)
    try:
        batches = [load_batch(config, [data_file], pipeline.tokenizer) for data_file in data_files]
        # The reward worker is a Ray actor that imports verl as it starts (about 14 s here); without this wait its
        # start-up lands inside the first rollout's time and swamps what scoring costs.
        ray.get(pipeline.reward_worker.__ray_ready__.remote())
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            for batch in batches:
                pipeline.rollout(batch)
            seconds.append(time.perf_counter() - start)
        return seconds
    finally:
        pipeline.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. algorithm.infopo.max_tokens_per_turn=16")
    parser.add_argument("--model", default=None, help="model directory (default: the tiny trained model)")
    args = parser.parse_args()
    os.environ.setdefault(KEY_VARIABLE, "loopback")
    model_path = args.model or trained_model()
    with tempfile.TemporaryDirectory() as scratch:
        rows = generate_rows(args.prompts, seed=11, split="test")
        all_rows = Path(scratch) / "rows.parquet"
        pd.DataFrame(rows).to_parquet(all_rows)
        single_rows = []
        for index, row in enumerate(rows):
            single_rows.append(Path(scratch) / f"row{index}.parquet")
            pd.DataFrame([row]).to_parquet(single_rows[-1])
        regimes = {
            "one at a time": (single_rows, 1, ["algorithm.adv_estimator=grpo"]),
            "batch": ([all_rows], args.rollouts, []),
        }
        for latency_s in (0.1, 0.5):
            for regime, (data_files, rollouts, regime_overrides) in regimes.items():
                with FakeOpenAIServer(scripted_user(latency_s)) as user_server:
                    settings = [
                        *DEFAULT_OVERRIDES, f"actor_rollout_ref.rollout.n={rollouts}",
                        "actor_rollout_ref.rollout.temperature=1.0", "algorithm.infopo.user.backend=openai",
                        f"algorithm.infopo.user.base_url={user_server.base_url}",
                        f"algorithm.infopo.user.api_key_env={KEY_VARIABLE}", "algorithm.infopo.user.max_retries=0",
                        *regime_overrides, *args.overrides,
                    ]
                    times, replies = {}, {}
                    for name, extra in VARIANTS.items():
                        before = len(user_server.requests)
                        times[name] = statistics.median(
                            rollout_seconds(model_path, data_files, [*settings, *extra], args.repeats))
                        replies[name] = (len(user_server.requests) - before) / args.repeats
                base = times["no scoring"]
                print(f"user latency {latency_s * 1000:.0f} ms, {regime} ({args.prompts * rollouts} dialogues):")
                for name, seconds in times.items():
                    print(f"  {name:15s} {seconds:6.2f} s  {seconds / base:.2f}x   "
                          f"{replies[name]:.1f} simulator replies per rollout")


if __name__ == "__main__":
    main()
