"""GPU check of counterfactual scoring on real vLLM (one CUDA GPU, ``verl[vllm]``; never run by CI; < 8 minutes).

What it measures, on clarify dialogues rolled out through verl's workers by a tiny locally built model served by
an in-process vLLM ``AsyncLLM`` (prefix caching on, as verl configures it), behind an adapter that follows verl
0.9.1's ``vLLMHttpServer.generate`` (same ``SamplingParams`` handling, ``num_cached_tokens``,
``extract_prompt_logprobs``, abort mapping):

1. **cached vs uncached r_t**: every scored turn of the rollout is rescored with
   ``algorithm.infopo.scoring.prefix_cache`` false and true (after replaying the dialogue's generation request so
   its context is in cache, as during the rollout): mean and max |r_t(cached) - r_t(uncached)|, the guard's
   resends, and which prompt-logprob table shape the engine returned (V1 full-length, V2 h rows shorter).
2. **rollout vs rescore factual r_t**: the same turns with the factual term from the sampling pass (temperature 1,
   raw) and from a prefill pass: mean |r_t(rollout) - r_t(rescore)|, the figure that decides the default of
   ``scoring.factual``.
3. **prefill tokens of the scoring requests, from vLLM's own counters**: the engine's Prometheus counters
   (``vllm:prompt_tokens``, ``vllm:prefix_cache_hits``; falls back to the per-request ``num_cached_tokens`` when
   the counters are not exposed) around the uncached and the cached rescoring passes.
4. **time of scoring vs generation**: engine time spent in scoring requests and in generation requests during the
   rollout, and the rollout's wall time with and without scoring.

It prints one JSON line per figure and a summary. ``--dry-run`` (or ``DRY_RUN=1``) runs the same logic on the CPU
with :class:`~infopo_verl.local.server.LocalLLMServer` in place of vLLM, whose request log stands in for vLLM's
counters: that checks the script, not the engine.

    python tests/special_e2e/check_scoring_vllm.py [--dry-run] [--prompts 4] [--rollouts 4] [--out result.json]

Record the printed figures in docs/results/gpu.md with the command, date and machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from infopo_verl.envs.clarify import generate_rows
from infopo_verl.local.pipeline import LocalPipeline, compose_config, load_batch
from infopo_verl.local.tiny import build_model, build_tokenizer
from infopo_verl.rollout.record import RolloutRecord
from infopo_verl.rollout.scoring import DialogueScorer, ScoringTurn

PLACEHOLDER = "No information found."
OVERRIDES = [
    "data.max_prompt_length=512", "data.max_response_length=256",
    "actor_rollout_ref.rollout.prompt_length=512", "actor_rollout_ref.rollout.response_length=256",
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=4", "algorithm.infopo.max_tokens_per_turn=32",
    "actor_rollout_ref.rollout.temperature=1.0", "actor_rollout_ref.rollout.calculate_log_probs=true",
]
MAX_MODEL_LEN = 768


class TimedClient:
    """Wraps an engine client: engine seconds and counts per kind of request, table shapes seen."""

    def __init__(self, client: Any):
        self.client = client
        self.seconds = {"scoring": 0.0, "generation": 0.0}
        self.requests = {"scoring": 0, "generation": 0}
        self.shapes = {"full": 0, "shorter": 0}
        self.cached_tokens = 0
        self.prompt_tokens = 0

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        kind = "scoring" if "prompt_logprobs" in sampling_params else "generation"
        start = time.perf_counter()
        output = await self.client.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params,
                                            **kwargs)
        self.seconds[kind] += time.perf_counter() - start
        self.requests[kind] += 1
        extra = output.extra_fields or {}
        cached = int(extra.get("num_cached_tokens") or 0)
        if kind == "scoring":
            self.cached_tokens += cached
            self.prompt_tokens += len(prompt_ids)
            if cached and extra.get("prompt_logprobs") is not None:
                self.shapes["full" if len(extra["prompt_logprobs"]) == len(prompt_ids) else "shorter"] += 1
        return output


class VLLMClient:
    """verl 0.9.1 ``vLLMHttpServer.generate``'s request handling over an in-process ``AsyncLLM``.

    The engine lives on its own event loop in a background thread (as in verl's server actor), because the CPU
    pipeline runs every rollout in a fresh ``asyncio.run`` loop and AsyncLLM's output handler is bound to one loop.
    """

    def __init__(self, model_path: str):
        self.model_path = model_path
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="vllm-engine-loop", daemon=True).start()
        self.engine = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    async def _start(self):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(model=self.model_path, max_model_len=MAX_MODEL_LEN, gpu_memory_utilization=0.3,
                               enforce_eager=True, enable_prefix_caching=True, disable_log_stats=False,
                               logprobs_mode="processed_logprobs", seed=0)
        return AsyncLLM.from_engine_args(args)

    async def _on_engine_loop(self, coroutine):
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self._loop))

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        return await self._on_engine_loop(self._generate(prompt_ids, dict(sampling_params)))

    async def _generate(self, prompt_ids, sampling_params):
        from verl.workers.rollout.replica import TokenOutput
        from verl.workers.rollout.vllm_rollout.utils import extract_prompt_logprobs
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = dict(sampling_params)
        max_tokens = max(1, min(params.pop("max_tokens", MAX_MODEL_LEN), MAX_MODEL_LEN - len(prompt_ids)))
        params["logprobs"] = 0 if params.pop("logprobs", False) else None
        sampling = SamplingParams(max_tokens=max_tokens, **params)
        final = None
        # verl hands vLLM a fresh id per request unless full_determinism
        async for output in self.engine.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), sampling,
                                                 request_id=uuid.uuid4().hex):
            final = output
        if not final.outputs:
            return TokenOutput(token_ids=[], log_probs=None, stop_reason="aborted", extra_fields={})
        extra = {"num_cached_tokens": getattr(final, "num_cached_tokens", None)}
        extract_prompt_logprobs(output=final, num_prompt_logprobs=sampling.prompt_logprobs, result_dict=extra)
        completion = final.outputs[0]
        log_probs = None
        if sampling.logprobs is not None:
            log_probs = [entry[token].logprob for token, entry in zip(completion.token_ids, completion.logprobs)]
        reason = completion.finish_reason
        return TokenOutput(token_ids=list(completion.token_ids), log_probs=log_probs,
                           stop_reason="aborted" if reason == "abort" else "completed", extra_fields=extra)

    async def reset_cache(self) -> None:
        await self._on_engine_loop(self.engine.reset_prefix_cache())

    def counters(self) -> dict[str, float]:
        """vLLM's Prometheus counters of prompt tokens and prefix-cache hits (empty if not exposed)."""
        try:
            from prometheus_client import REGISTRY
        except ImportError:
            return {}
        wanted = ("vllm:prompt_tokens", "vllm:prefix_cache_hits", "vllm:prefix_cache_queries")
        values: dict[str, float] = {}
        for metric in REGISTRY.collect():
            for sample in metric.samples:
                if sample.name.startswith(wanted) and sample.name.endswith("_total"):
                    values[sample.name] = values.get(sample.name, 0.0) + sample.value
        return values


class CPUClient:
    """The dry run's stand-in: the CPU server, whose request log plays vLLM's counters."""

    def __init__(self, model_path: str):
        from infopo_verl.local.server import LocalLLMServer

        self.server = LocalLLMServer(model_path, MAX_MODEL_LEN, seed=0)

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        return await self.server.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params)

    async def reset_cache(self) -> None:
        self.server.clear_cache()

    def counters(self) -> dict[str, float]:
        log = self.server.requests_log
        return {"vllm:prompt_tokens_total": float(sum(r.prompt_tokens for r in log)),
                "vllm:prefix_cache_hits_total": float(sum(r.cached_tokens for r in log))}


def rollout(model_path, data_file, client, extra):
    config = compose_config(model_path, [*OVERRIDES, *extra])
    pipeline = LocalPipeline(config, client)
    try:
        batch = load_batch(config, [data_file], pipeline.tokenizer)
        start = time.perf_counter()
        batch = pipeline.rollout(batch)
        return batch, time.perf_counter() - start, pipeline.tokenizer
    finally:
        pipeline.close()


def message_ids(tokenizer, message) -> list[int]:
    """Ids the chat template adds for ``message`` and the next generation prompt."""
    context = [{"role": "system", "content": "context"}]
    before = tokenizer.apply_chat_template(context, tokenize=True, add_generation_prompt=False)
    after = tokenizer.apply_chat_template(context + [message], tokenize=True, add_generation_prompt=True)
    before, after = (list(getattr(ids, "input_ids", ids)) for ids in (before, after))  # ids or a BatchEncoding
    assert after[: len(before)] == before, "the chat template does not render messages as a prefix-stable suffix"
    return after[len(before):]


def scored_turns(batch, tokenizer):
    """Per row: (full ids, feedback-end position, [ScoringTurn]) rebuilt from the batch (as the CPU tests do)."""
    attention, width = batch.batch["attention_mask"], batch.batch["prompts"].shape[1]
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        prompt = batch.batch["prompts"][row][attention[row, :width].bool()].tolist()
        response = batch.batch["responses"][row][: int(attention[row, width:].sum())].tolist()
        full, offset = prompt + response, len(prompt)
        rollout_logprobs = batch.batch["rollout_log_probs"][row].tolist()
        turns, warm = [], []
        for turn, feedback_span in enumerate(record.feedback_spans):
            if record.info_gain[turn] is None:
                continue
            start, end = record.turn_spans[turn + 1]
            feedback_ids = full[offset + feedback_span[0]: offset + feedback_span[1] + 1]
            rendered = message_ids(tokenizer, {"role": "user", "content": record.feedback_texts[turn]})
            boundary = feedback_ids[: len(feedback_ids) - len(rendered)]
            assert boundary + rendered == feedback_ids, f"row {row}, turn {turn}: cannot rebuild the feedback message"
            prefix = full[: offset + feedback_span[0]] + boundary + message_ids(
                tokenizer, {"role": "user", "content": PLACEHOLDER})
            turns.append(ScoringTurn(turn, prefix, offset + start, full[offset + start: offset + end + 1],
                                     rollout_logprobs[start: end + 1]))
            warm.append(full[: offset + start])
        yield row, full, turns, warm


async def warm_up(engine, batch, tokenizer):
    """An empty cache, then the dialogues' generation requests, which put their contexts in cache."""
    await engine.reset_cache()
    for _, _, _, warm in scored_turns(batch, tokenizer):
        for prompt in warm:
            await engine.generate("warm", prompt_ids=prompt, sampling_params={"max_tokens": 1, "temperature": 1.0})


async def rescore(client, batch, tokenizer, *, prefix_cache, source):
    gains, resent = {}, 0
    for row, full, turns, _ in scored_turns(batch, tokenizer):
        scorer = DialogueScorer(client, f"row-{row}", MAX_MODEL_LEN, source=source, prefix_cache=prefix_cache)
        for turn in turns:
            scorer.submit(turn)
        result = await scorer.finish(full)
        resent += result.resent
        gains.update({(row, turn): value for turn, value in result.info_gain.items()})
    return gains, resent


def differences(first, second):
    common = sorted(first.keys() & second.keys())
    gaps = [abs(first[key] - second[key]) for key in common]
    return {"turns": len(common), "mean_abs": statistics.fmean(gaps) if gaps else None,
            "max_abs": max(gaps) if gaps else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", default=os.environ.get("DRY_RUN") == "1")
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict[str, Any] = {"engine": "LocalLLMServer (dry run, CPU)" if args.dry_run else "vLLM AsyncLLM"}
    with tempfile.TemporaryDirectory() as scratch:
        model_path = str(Path(scratch) / "tiny-model")
        build_model(model_path, build_tokenizer(model_path))
        data_file = Path(scratch) / "rows.parquet"
        pd.DataFrame(generate_rows(args.prompts, seed=5, split="test")).to_parquet(data_file)
        engine = CPUClient(model_path) if args.dry_run else VLLMClient(model_path)
        n = f"actor_rollout_ref.rollout.n={args.rollouts}"

        timed = TimedClient(engine)
        _, baseline_s, _ = rollout(model_path, data_file, timed, [n, "algorithm.infopo.info_gain=false"])
        timed = TimedClient(engine)
        batch, scored_s, tokenizer = rollout(model_path, data_file, timed, [n])
        results["time"] = {"rollout_without_scoring_s": baseline_s, "rollout_with_scoring_s": scored_s,
                           "engine_s": dict(timed.seconds), "requests": dict(timed.requests)}

        async def passes():
            out = {}
            for name, prefix_cache, source in (("uncached", False, "rescore"), ("cached", True, "rescore"),
                                               ("rollout_factual", False, "rollout")):
                await warm_up(engine, batch, tokenizer)
                before = engine.counters()
                probe = TimedClient(engine)
                gains, resent = await rescore(probe, batch, tokenizer, prefix_cache=prefix_cache, source=source)
                after = engine.counters()
                out[name] = (gains, {"resent": resent, "table_shapes": probe.shapes,
                                     "scoring_prompt_tokens": probe.prompt_tokens,
                                     "scoring_cached_tokens_reported": probe.cached_tokens,
                                     "engine_counter_deltas": {
                                         key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}})
            return out

        measured = asyncio.run(passes())
    results["passes"] = {name: stats for name, (_, stats) in measured.items()}
    results["cached_vs_uncached"] = differences(measured["cached"][0], measured["uncached"][0])
    results["rollout_vs_rescore"] = differences(measured["rollout_factual"][0], measured["uncached"][0])
    # The rebuilt counterfactuals must be the rollout's own: its recorded r_t (rescored factual side or not)
    recorded = {(row, turn): gain for row in range(len(batch))
                for turn, gain in enumerate(RolloutRecord.from_batch(batch.non_tensor_batch, row).info_gain) if gain is not None}
    results["rollout_record_vs_rollout_factual"] = differences(recorded, measured["rollout_factual"][0])
    results["wall_s"] = time.perf_counter() - started
    for key, value in results.items():
        print(json.dumps({key: value}, default=str))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str))
    agreement, rebuilt = results["cached_vs_uncached"], results["rollout_record_vs_rollout_factual"]
    ok = agreement["turns"] > 0 and agreement["max_abs"] is not None and agreement["max_abs"] < 1e-2
    # the same requests as during the rollout (factual from the rollout at temperature 1): equal up to batching noise
    ok = ok and rebuilt["turns"] == agreement["turns"] and rebuilt["max_abs"] < 1e-2
    print(f"[scoring check] {'agree' if ok else 'DISAGREE'}: {agreement['turns']} turns, "
          f"max |r_t(cached) - r_t(uncached)| = {agreement['max_abs']}; mean |r_t(rollout) - r_t(rescore)| = "
          f"{results['rollout_vs_rescore']['mean_abs']}; {results['wall_s']:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
