"""End to end on CPU: verl's AgentLoopWorker and RewardLoopWorker (a real Ray actor) with the plugin's loop,
reward manager and estimator, on the built-in clarify task. The only stand-in is the inference server
(``LocalLLMServer``, a real Hugging Face model on CPU), wrapped here in a spy that records every request.

Every r_t is checked against an independent recomputation: a plain Hugging Face forward pass over ids rebuilt
from the batch and the chat template, not from the plugin's code.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import hydra
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from testkit.spy import SpyServer
from testkit.tiny import tiny_model_path
from verl.experimental.agent_loop.agent_loop import (
    AgentLoopWorker,
    DictConfigWrap,
    ToolListWrap,
    _agent_loop_registry,
)

from infopo_verl.envs.clarify import ClarifyEnv, generate_rows
from infopo_verl.local.pipeline import LocalPipeline, compose_config, load_batch
from infopo_verl.local.server import LocalLLMServer
from infopo_verl.reward_manager import EXTRA_INFO_KEYS
from infopo_verl.rollout.actions import parse_action
from infopo_verl.rollout.output import VALIDATING, InfoPOAgentLoopOutput
from infopo_verl.rollout.record import RolloutRecord

PLACEHOLDER = "No information found."
BASE_OVERRIDES = [
    "actor_rollout_ref.rollout.n=2",
    "actor_rollout_ref.rollout.prompt_length=512",
    "data.max_prompt_length=512",
    "actor_rollout_ref.rollout.response_length=160",
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=4",
    "algorithm.infopo.max_tokens_per_turn=16",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return tiny_model_path(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "clarify.parquet"
    pd.DataFrame(generate_rows(2, seed=3, split="test")).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def hf(model_dir):
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(model_dir)


def run_pipeline(model_dir, data_file, overrides, *, max_model_len=None, **server_options):
    config = compose_config(model_dir, [*BASE_OVERRIDES, *overrides])
    rollout = config.actor_rollout_ref.rollout
    length = max_model_len or rollout.prompt_length + rollout.response_length
    spy = SpyServer(LocalLLMServer(model_dir, max_model_len=length, seed=7, **server_options))
    pipeline = LocalPipeline(config, spy)
    try:
        batch = pipeline.rollout(load_batch(config, [data_file], pipeline.tokenizer))
        batch = pipeline.advantages(batch)
    finally:
        pipeline.close()
    return config, spy, batch


def valid_ids(batch, row):
    prompt = batch.batch["prompts"][row]
    prompt_length = prompt.shape[0]
    attention = batch.batch["attention_mask"][row]
    prompt_ids = prompt[attention[:prompt_length].bool()].tolist()
    response_length = int(attention[prompt_length:].sum())
    return prompt_ids, batch.batch["responses"][row][:response_length].tolist()


def mask_runs(mask):
    runs, start = [], None
    for position, value in enumerate(mask + [0]):
        if value and start is None:
            start = position
        if not value and start is not None:
            runs.append([start, position - 1])
            start = None
    return runs


def message_delta(tokenizer, message):
    """Ids the chat template adds for ``message`` plus the next generation prompt (independent of verl)."""
    prefix = [{"role": "system", "content": "context"}]
    before = tokenizer.apply_chat_template(prefix, tokenize=True, add_generation_prompt=False)
    after = tokenizer.apply_chat_template(prefix + [message], tokenize=True, add_generation_prompt=True)
    before, after = (list(getattr(ids, "input_ids", ids)) for ids in (before, after))
    assert after[: len(before)] == before
    return after[len(before) :]


def raw_logprobs(model, ids, start, length):
    """log p(ids[k] | ids[:k]) for k in [start, start + length), raw model, float32."""
    with torch.no_grad():
        logits = model(torch.tensor([ids[: start + length]])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [float(logprobs[k - 1, ids[k]]) for k in range(start, start + length)]


def recompute_info_gains(hf, batch, row):
    """Independent r_t of every turn that the record says was measured."""
    model, tokenizer = hf
    record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
    prompt_ids, response_ids = valid_ids(batch, row)
    full = prompt_ids + response_ids
    offset = len(prompt_ids)
    gains = {}
    for turn, (span, feedback_span) in enumerate(zip(record.turn_spans, record.feedback_spans)):
        if record.info_gain[turn] is None:
            continue
        next_start, next_end = record.turn_spans[turn + 1]
        next_ids = full[offset + next_start : offset + next_end + 1]
        feedback_ids = full[offset + feedback_span[0] : offset + feedback_span[1] + 1]
        rendered = message_delta(tokenizer, {"role": "user", "content": record.feedback_texts[turn]})
        boundary = feedback_ids[: len(feedback_ids) - len(rendered)]
        # The feedback span is exactly: boundary tokens, then the rendered message and the generation prompt.
        assert boundary + rendered == feedback_ids
        context = full[: offset + feedback_span[0]]
        counterfactual = context + boundary + message_delta(tokenizer, {"role": "user", "content": PLACEHOLDER})
        factual = raw_logprobs(model, full, offset + next_start, len(next_ids))
        masked = raw_logprobs(model, counterfactual + next_ids, len(counterfactual), len(next_ids))
        gains[turn] = sum(f - c for f, c in zip(factual, masked)) / len(next_ids)
    return gains


@pytest.fixture(scope="module")
def default_run(model_dir, data_file):
    return run_pipeline(model_dir, data_file, ["actor_rollout_ref.rollout.temperature=1.0"])


def test_spans_mask_and_exact_ids(default_run):
    config, spy, batch = default_run
    assert len(batch) == 4
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        prompt_ids, response_ids = valid_ids(batch, row)
        mask = batch.batch["response_mask"][row][: len(response_ids)].tolist()
        # Agent turns are exactly the runs of 1 in response_mask; feedback sits between them with mask 0.
        assert mask_runs(mask) == [list(span) for span in record.turn_spans]
        for span, feedback in zip(record.turn_spans, record.feedback_spans):
            if feedback is not None:
                assert feedback[0] == span[1] + 1 and not any(mask[feedback[0] : feedback[1] + 1])
        # Every agent turn was generated from exactly the ids now in the batch before it, and its ids are the
        # ids the server returned: nothing was re-tokenised.
        full = prompt_ids + response_ids
        for start, end in record.turn_spans:
            context = full[: len(prompt_ids) + start]
            generated = full[len(prompt_ids) + start : len(prompt_ids) + end + 1]
            matches = [r for r in spy.agent_requests() if r[0] == context]
            assert matches, f"row {row}: no generate call conditioned on the ids before turn at {start}"
            assert any(r[2][: len(generated)] == generated for r in matches)


def test_rm_scores_layout_and_outcome(default_run):
    config, spy, batch = default_run
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        _, response_ids = valid_ids(batch, row)
        scores = batch.batch["rm_scores"][row]
        last = len(response_ids) - 1
        expected = torch.zeros_like(scores)
        for turn, (span, gain) in enumerate(zip(record.turn_spans, record.info_gain)):
            if gain is not None:
                expected[span[1]] += gain
        expected[last] += record.env_score
        torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)
        # The final turn never carries r_t; every other turn with feedback and a following turn does.
        assert record.info_gain[-1] is None
        # The outcome is the task's own score: replay the agent's actions on a fresh environment.
        row_kwargs = {key: batch.non_tensor_batch[key][row] for key in ("extra_info",)}
        environment = ClarifyEnv.from_row(row_kwargs, None, {})

        async def replay():
            for text in record.agent_texts:
                result = await environment.step(parse_action(text))
                if result.done:
                    break
            return await environment.final_score()

        if record.ended_by != "token_budget":
            assert asyncio.run(replay()) == pytest.approx(record.env_score)


def test_every_info_gain_matches_independent_recomputation(default_run, hf):
    config, spy, batch = default_run
    measured = 0
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        expected = recompute_info_gains(hf, batch, row)
        got = {turn: gain for turn, gain in enumerate(record.info_gain) if gain is not None}
        assert got.keys() == expected.keys()
        for turn in got:
            assert got[turn] == pytest.approx(expected[turn], abs=2e-5), (row, turn)
        measured += len(got)
    assert measured >= 4  # the run really measured several turns


def test_reward_extra_info_and_advantages(default_run):
    config, spy, batch = default_run
    for key in EXTRA_INFO_KEYS:
        assert key in batch.non_tensor_batch and len(batch.non_tensor_batch[key]) == len(batch)
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        gains = [gain for gain in record.info_gain if gain is not None]
        assert batch.non_tensor_batch["info_gain_count"][row] == len(gains)
        assert batch.non_tensor_batch["info_gain_sum"][row] == pytest.approx(sum(gains))
        assert batch.non_tensor_batch["outcome"][row] == pytest.approx(record.env_score)
    # The estimator ran through verl: advantages exist only on agent tokens.
    advantages, mask = batch.batch["advantages"], batch.batch["response_mask"]
    assert torch.all(advantages[mask == 0] == 0)
    assert torch.any(advantages[mask == 1] != 0)


@pytest.mark.parametrize("temperature", [0.6, 1.4])
def test_rescoring_keeps_raw_logprobs_at_any_temperature(model_dir, data_file, hf, temperature):
    """Away from temperature 1, verl's processed log-probs are tempered: the loop must rescore the factual side."""
    config, spy, batch = run_pipeline(model_dir, data_file, [f"actor_rollout_ref.rollout.temperature={temperature}"])
    model, _ = hf
    measured = 0
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        expected = recompute_info_gains(hf, batch, row)
        for turn, gain in enumerate(record.info_gain):
            if gain is not None:
                assert gain == pytest.approx(expected[turn], abs=2e-5)
                measured += 1
        # The rollout's own log-probs are not the raw ones here, so using them would have been wrong.
        prompt_ids, response_ids = valid_ids(batch, row)
        start, end = record.turn_spans[0]
        rollout = batch.batch["rollout_log_probs"][row][start : end + 1].tolist()
        raw = raw_logprobs(model, prompt_ids + response_ids, len(prompt_ids) + start, end - start + 1)
        assert max(abs(a - b) for a, b in zip(rollout, raw)) > 1e-3
    assert measured >= 2
    # One factual rescoring request per dialogue with measured turns, next to one request per measured turn.
    assert len(spy.scoring_requests()) == measured + sum(
        any(g is not None for g in RolloutRecord.from_batch(batch.non_tensor_batch, row).info_gain) for row in range(len(batch))
    )


def test_truncation_at_the_token_budget(model_dir, data_file):
    config, spy, batch = run_pipeline(
        model_dir, data_file, ["actor_rollout_ref.rollout.response_length=40", "algorithm.infopo.max_tokens_per_turn=30"]
    )
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        mask = batch.batch["response_mask"][row].tolist()
        assert len(mask) == 40
        if record.ended_by == "token_budget" and record.turn_spans[-1][1] == 39:
            # Cut in the middle of a turn: the response ends on an agent token, nothing was acted on after it.
            assert mask[-1] == 1
            assert record.feedback_texts[-1] is None
    assert any(RolloutRecord.from_batch(batch.non_tensor_batch, row).ended_by == "token_budget" for row in range(len(batch)))


def test_grpo_baseline_runs_the_same_rollout_without_scoring(model_dir, data_file, default_run):
    _, _, infopo_batch = default_run
    config, spy, batch = run_pipeline(
        model_dir, data_file, ["algorithm.adv_estimator=grpo", "algorithm.infopo.info_gain=false"]
    )
    assert spy.scoring_requests() == []
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        assert all(gain is None for gain in record.info_gain)
        _, response_ids = valid_ids(batch, row)
        scores = batch.batch["rm_scores"][row]
        assert torch.count_nonzero(scores[: len(response_ids) - 1]) == 0

    # Same seeds, same dialogues: scoring changes no agent turn, user reply or environment call. (The server
    # seeds the k-th sample of a prompt, so concurrent rollouts of one task may swap rows: compare per task.)
    def dialogues(run):
        per_task = {}
        for row in range(len(run)):
            record = RolloutRecord.from_batch(run.non_tensor_batch, row)
            task = run.non_tensor_batch["extra_info"][row]["index"]
            per_task.setdefault(task, []).append(
                (record.agent_texts, record.feedback_texts, record.env_steps)
            )
        return {task: sorted(items) for task, items in per_task.items()}

    assert dialogues(batch) == dialogues(infopo_batch)


def test_other_estimators_see_beta_scaled_turn_rewards(model_dir, data_file, default_run):
    _, _, infopo_batch = default_run
    config, spy, batch = run_pipeline(
        model_dir, data_file, ["algorithm.adv_estimator=reinforce_plus_plus", "algorithm.infopo.beta=0.25"]
    )
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        for (position, value), span, gain in zip(
            record.turn_rewards, [s for s, g in zip(record.turn_spans, record.info_gain) if g is not None],
            [g for g in record.info_gain if g is not None],
        ):
            assert position == span[1] and value == pytest.approx(0.25 * gain)
            assert float(batch.batch["rm_scores"][row][position]) == pytest.approx(0.25 * gain, abs=1e-6)


def test_long_counterfactuals_are_skipped_and_counted(model_dir, data_file):
    long_placeholder = " ".join(["nothing"] * 400)
    config, spy, batch = run_pipeline(
        model_dir, data_file, [f"algorithm.infopo.placeholder='{long_placeholder}'", "actor_rollout_ref.rollout.max_model_len=700"],
        max_model_len=700,
    )
    skipped = sum(RolloutRecord.from_batch(batch.non_tensor_batch, row).scoring_skipped for row in range(len(batch)))
    assert skipped > 0
    assert all(len(prompt) <= 699 for prompt, _, _ in spy.scoring_requests())
    assert sum(batch.non_tensor_batch["scoring_skipped"]) == skipped


def test_v1_trainer_layout_through_as_dict(model_dir, data_file):
    """The v1 trainer stores ``AgentLoopOutput.as_dict()``: run the loop as verl instantiates it, score it with
    verl's ``_compute_score`` (the reward actor), then check the ``rm_scores`` that ``as_dict`` builds."""
    import ray
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    config = compose_config(model_dir, BASE_OVERRIDES)
    server = LocalLLMServer(model_dir, max_model_len=672, seed=11)
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    reward_worker = ray.remote(RewardLoopWorker).remote(config)
    worker = AgentLoopWorker(config, llm_client=None, reward_loop_worker_handles=[reward_worker])
    worker.llm_client = server
    batch = load_batch(config, [data_file], worker.tokenizer, size=1)
    kwargs = {key: values[0] for key, values in batch.non_tensor_batch.items()}

    async def run_one():
        VALIDATING.set(False)  # what InfoPO's v1 worker does around each loop (a training rollout)
        loop = hydra.utils.instantiate(
            config=_agent_loop_registry["infopo_user"],
            trainer_config=DictConfigWrap(config=config),
            server_manager=server,
            tokenizer=worker.tokenizer,
            processor=None,
            hf_model_type="qwen2",
            dataset_cls=worker.dataset_cls,
            data_config=DictConfigWrap(config.data),
            tools=ToolListWrap([]),
        )
        output = await loop.run({"temperature": 1.0, "top_p": 1.0, "top_k": -1, "logprobs": True}, **kwargs)
        await worker._compute_score([output], kwargs=kwargs)
        return output

    try:
        output = asyncio.run(run_one())
    finally:
        ray.kill(reward_worker)
    assert isinstance(output, InfoPOAgentLoopOutput)
    record = RolloutRecord.from_extra_fields(output.extra_fields)
    stored = output.as_dict()
    scores = stored["rm_scores"]
    assert stored["extra_fields"]["infopo"] == record  # what the v1 trainer stores keeps the typed record
    assert scores.shape[0] == len(output.response_ids)
    expected = torch.zeros_like(scores)
    for span, gain in zip(record.turn_spans, record.info_gain):
        if gain is not None:
            expected[span[1]] += gain
    expected[-1] += output.reward_score
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)
    assert output.reward_score == pytest.approx(record.env_score)
    assert any(gain is not None for gain in record.info_gain)


# ---- scoring at engine speed: prefix cache, pipelining, SGLang, aborts ----


def info_gains_by_dialogue(batch):
    """{(task, agent texts, feedback texts): info_gain list}: the same dialogue, whichever row it landed in."""
    out = {}
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        key = (batch.non_tensor_batch["extra_info"][row]["index"], tuple(record.agent_texts),
               tuple(map(str, record.feedback_texts)))
        out[key] = record.info_gain
    return out


def assert_same_info_gains(batch, reference_batch):
    got, expected = info_gains_by_dialogue(batch), info_gains_by_dialogue(reference_batch)
    assert got.keys() == expected.keys()
    for key in got:
        assert [g is None for g in got[key]] == [e is None for e in expected[key]], key
        assert [g for g in got[key] if g is not None] == pytest.approx(
            [e for e in expected[key] if e is not None], abs=1e-6)


@pytest.mark.parametrize("runner", ["v1", "v2"])
def test_cached_scoring_gives_the_uncached_r_t(model_dir, data_file, hf, default_run, runner):
    _, uncached_spy, uncached = default_run
    config, spy, batch = run_pipeline(
        model_dir, data_file, ["actor_rollout_ref.rollout.temperature=1.0", "algorithm.infopo.scoring.prefix_cache=true"],
        runner=runner,
    )
    assert_same_info_gains(batch, uncached)
    for row in range(len(batch)):  # and the independent HF recomputation
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        for turn, gain in recompute_info_gains(hf, batch, row).items():
            assert record.info_gain[turn] == pytest.approx(gain, abs=2e-5), (row, turn)
    # the cache was really read, and saved prefill work
    scoring = [record for record in spy.server.requests_log if record.prompt_logprobs]
    assert sum(record.cached_tokens for record in scoring) > 0
    uncached_scoring = [record for record in uncached_spy.server.requests_log if record.prompt_logprobs]
    assert sum(r.computed_prefill_tokens for r in scoring) < sum(r.computed_prefill_tokens for r in uncached_scoring)


def test_pipelined_scoring_equals_scoring_after_the_dialogue(model_dir, data_file, default_run):
    """full_determinism sends a dialogue's scoring requests one at a time after its end: same r_t, later."""
    _, pipelined_spy, pipelined = default_run
    config, serial_spy, serial = run_pipeline(
        model_dir, data_file, ["actor_rollout_ref.rollout.temperature=1.0", "actor_rollout_ref.rollout.full_determinism=true"],
        reject_duplicate_request_ids=True,
    )
    assert_same_info_gains(serial, pipelined)

    def scoring_before_last_generation(spy):
        early = 0
        for request_id in {request_id for request_id, _ in spy.starts}:
            kinds = [scoring for rid, scoring in spy.starts if rid == request_id]
            last_generation = max(index for index, scoring in enumerate(kinds) if not scoring)
            early += any(kinds[:last_generation])
        return early

    # pipelined: some dialogue sent a scoring request before its last agent turn; serial: none did
    assert scoring_before_last_generation(pipelined_spy) > 0
    assert scoring_before_last_generation(serial_spy) == 0


def test_sglang_gets_only_keys_it_accepts(model_dir, data_file, hf):
    config, spy, batch = run_pipeline(
        model_dir, data_file,
        ["actor_rollout_ref.rollout.name=sglang", "actor_rollout_ref.rollout.full_determinism=true",
         "actor_rollout_ref.rollout.temperature=1.0"],
        engine="sglang",
    )
    expected = {"max_tokens": 1, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0,
                "logprobs": False, "prompt_logprobs": 0}
    assert spy.scoring_requests() and all(params == expected for _, params, _ in spy.scoring_requests())
    measured = 0
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        for turn, gain in recompute_info_gains(hf, batch, row).items():
            assert record.info_gain[turn] == pytest.approx(gain, abs=2e-5)
            measured += 1
    assert measured >= 2


def test_aborted_scoring_is_skipped_and_counted(model_dir, data_file):
    config = compose_config(model_dir, [*BASE_OVERRIDES, "actor_rollout_ref.rollout.temperature=1.0"])
    server = LocalLLMServer(model_dir, max_model_len=672, seed=7)
    server.abort_next(10_000)  # every scoring request comes back aborted, as from a preempted engine
    pipeline = LocalPipeline(config, server)
    try:
        batch = pipeline.rollout(load_batch(config, [data_file], pipeline.tokenizer))
    finally:
        pipeline.close()
    eligible = 0
    for row in range(len(batch)):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        assert all(gain is None for gain in record.info_gain)
        scored = sum(record.feedback_texts[t] is not None for t in range(len(record.turn_spans) - 1))
        assert record.scoring_skipped == scored
        eligible += scored
    assert eligible > 0 and sum(batch.non_tensor_batch["scoring_skipped"]) == eligible
