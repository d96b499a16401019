"""The dialogue scorer against the CPU stand-in for vLLM (``LocalLLMServer``, a real tiny model) and an independent
Hugging Face forward pass: cached and uncached r_t, both prompt-logprob table shapes, the guard, aborts, engines."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch
from testkit.tiny import tiny_model_path
from transformers import AutoModelForCausalLM

from infopo_verl.config import ConfigError
from infopo_verl.local.server import LocalLLMServer
from infopo_verl.rollout.scoring import (
    DialogueScorer,
    ScoringTurn,
    resolve_factual_source,
    scoring_sampling_params,
)

MAX_MODEL_LEN = 128
# A dialogue in ids: ctx_t (40), the feedback o_t (10), a_{t+1} (12); the counterfactual swaps o_t for PH (8).
CONTEXT = [(11 * position + 5) % 180 + 10 for position in range(40)]
FEEDBACK = [(5 * position + 1) % 90 + 20 for position in range(10)]
PLACEHOLDER = [60, 61, 62, 63, 64, 65, 66, 67]
NEXT_TURN = [(3 * position + 7) % 70 + 30 for position in range(12)]
DIALOGUE = CONTEXT + FEEDBACK + NEXT_TURN


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_path(tmp_path_factory.mktemp("scoring"))


@pytest.fixture(scope="module")
def reference(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def hf_logprobs(model, ids, start, length):
    with torch.no_grad():
        rows = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
    return [rows[k - 1, ids[k]].item() for k in range(start, start + length)]


def expected_info_gain(model):
    factual = hf_logprobs(model, DIALOGUE, len(CONTEXT) + len(FEEDBACK), len(NEXT_TURN))
    counterfactual_ids = CONTEXT + PLACEHOLDER + NEXT_TURN
    counterfactual = hf_logprobs(model, counterfactual_ids, len(CONTEXT) + len(PLACEHOLDER), len(NEXT_TURN))
    return sum(f - c for f, c in zip(factual, counterfactual)) / len(NEXT_TURN)


def scoring_turn(model=None):
    return ScoringTurn(
        turn=0,
        counterfactual_prefix=CONTEXT + PLACEHOLDER,
        next_turn_start=len(CONTEXT) + len(FEEDBACK),
        next_turn_ids=NEXT_TURN,
        rollout_logprobs=None if model is None else hf_logprobs(model, DIALOGUE, 50, len(NEXT_TURN)),
    )


async def score(server, *, prefix_cache, source="rescore", serial=False, turns=None, engine="vllm"):
    scorer = DialogueScorer(server, "dialogue-1", MAX_MODEL_LEN, source=source, engine=engine,
                            prefix_cache=prefix_cache, serial=serial)
    for turn in turns or [scoring_turn()]:
        scorer.submit(turn)
    return await scorer.finish(DIALOGUE)


async def play_dialogue(server):
    """The dialogue's own generation requests, which fill the cache with ctx_t and the feedback."""
    await server.generate("dialogue-1", prompt_ids=CONTEXT, sampling_params={"max_tokens": 1})
    await server.generate("dialogue-1", prompt_ids=CONTEXT + FEEDBACK, sampling_params={"max_tokens": 1})


@pytest.mark.parametrize("runner", ["v1", "v2"])
async def test_cached_r_t_equals_uncached_and_the_hf_recomputation(model_dir, reference, runner):
    expected = expected_info_gain(reference)
    results = {}
    for prefix_cache in (False, True):
        server = LocalLLMServer(model_dir, MAX_MODEL_LEN, runner=runner)
        await play_dialogue(server)
        results[prefix_cache] = await score(server, prefix_cache=prefix_cache)
        scoring = [record for record in server.requests_log if record.prompt_logprobs]
        if prefix_cache:
            # ctx_t was read from cache (two full blocks), so fewer tokens were computed; the factual rescoring
            # request is always sent uncached.
            assert sorted(record.cached_tokens for record in scoring) == [0, 32]
            assert results[True].cached_tokens == 32 and results[True].resent == 0
        else:
            assert all(record.cached_tokens == 0 for record in scoring)
    assert results[True].info_gain[0] == pytest.approx(expected, abs=1e-5)
    assert results[False].info_gain[0] == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("runner", ["v1", "v2"])
async def test_the_guard_resends_when_the_cache_covers_a_needed_row(model_dir, reference, runner):
    server = LocalLLMServer(model_dir, MAX_MODEL_LEN, runner=runner)
    await play_dialogue(server)
    # An earlier identical counterfactual (a retry, a twin rollout) left its blocks in cache: the next one's hit
    # reaches into a_{t+1}, whose rows would be garbage (v1) or missing (v2).
    await server.generate("twin", prompt_ids=CONTEXT + PLACEHOLDER + NEXT_TURN, sampling_params={"max_tokens": 1})
    result = await score(server, prefix_cache=True, source="rollout", turns=[scoring_turn(reference)])
    assert result.resent == 1
    cached_attempt, resend = [record for record in server.requests_log if record.prompt_logprobs][-2:]
    assert cached_attempt.cached_tokens == 48 > len(CONTEXT) + len(PLACEHOLDER) - 1
    assert resend.cached_tokens == 0
    assert result.info_gain[0] == pytest.approx(expected_info_gain(reference), abs=1e-5)


async def test_rows_whose_ids_disagree_are_refused(model_dir):
    server = LocalLLMServer(model_dir, MAX_MODEL_LEN)

    class WrongIds:
        async def generate(self, request_id, *, prompt_ids, sampling_params):
            output = await server.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params)
            output.extra_fields["prompt_ids"] = [[0] for _ in output.extra_fields["prompt_ids"]]
            return output

    with pytest.raises(RuntimeError, match="prompt_ids disagree"):
        await score(WrongIds(), prefix_cache=False)


async def test_an_aborted_request_is_retried_once_then_the_turn_is_skipped(model_dir, reference):
    server = LocalLLMServer(model_dir, MAX_MODEL_LEN)
    server.abort_next(1)
    retried = await score(server, prefix_cache=False, source="rollout", turns=[scoring_turn(reference)])
    assert retried.retried == 1 and retried.skipped == 0
    assert retried.info_gain[0] == pytest.approx(expected_info_gain(reference), abs=1e-5)

    server.abort_next(2)
    skipped = await score(server, prefix_cache=False, source="rollout", turns=[scoring_turn(reference)])
    assert skipped.info_gain == {} and skipped.skipped == 1 and skipped.aborted == 1

    # the factual rescoring request serves every turn: aborted twice, every turn is skipped and counted
    second = dataclasses.replace(scoring_turn(), turn=1)
    server.abort_next(1000)
    everything = await score(server, prefix_cache=False, turns=[scoring_turn(), second])
    assert everything.info_gain == {} and everything.skipped == 2


async def test_a_server_without_prompt_logprobs_is_named_not_blamed_on_an_abort(model_dir):
    class Dropping:
        async def generate(self, request_id, *, prompt_ids, sampling_params):
            from verl.workers.rollout.replica import TokenOutput

            return TokenOutput(token_ids=[1], log_probs=None, stop_reason="completed", extra_fields={})

    with pytest.raises(RuntimeError, match="stop_reason='completed', not an abort"):
        await score(Dropping(), prefix_cache=False)


async def test_serial_scoring_never_has_two_requests_with_one_id_in_flight(model_dir, reference):
    strict = LocalLLMServer(model_dir, MAX_MODEL_LEN, reject_duplicate_request_ids=True)
    turns = [scoring_turn(), dataclasses.replace(scoring_turn(), turn=1)]
    with pytest.raises(ValueError, match="Duplicate request ID"):
        await score(strict, prefix_cache=False, turns=turns)  # concurrent requests of one dialogue collide
    strict = LocalLLMServer(model_dir, MAX_MODEL_LEN, reject_duplicate_request_ids=True)
    result = await score(strict, prefix_cache=False, turns=turns, serial=True)
    assert result.info_gain[0] == result.info_gain[1] == pytest.approx(expected_info_gain(reference), abs=1e-5)


def test_sampling_params_per_engine():
    assert scoring_sampling_params("sglang", read_prefix_cache=False) == {
        "max_tokens": 1, "temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0,
        "logprobs": False, "prompt_logprobs": 0,
    }
    assert scoring_sampling_params("vllm", read_prefix_cache=False)["detokenize"] is False
    assert "skip_reading_prefix_cache" not in scoring_sampling_params("vllm", read_prefix_cache=False)
    assert scoring_sampling_params("vllm", read_prefix_cache=True)["skip_reading_prefix_cache"] is False
    with pytest.raises(ConfigError, match=r"scoring\.prefix_cache=true needs actor_rollout_ref\.rollout\.name=vllm"):
        scoring_sampling_params("sglang", read_prefix_cache=True)


async def test_sglang_accepts_exactly_what_is_sent(model_dir, reference):
    server = LocalLLMServer(model_dir, MAX_MODEL_LEN, engine="sglang")
    result = await score(server, prefix_cache=False, engine="sglang", serial=True)
    assert result.info_gain[0] == pytest.approx(expected_info_gain(reference), abs=1e-5)


@pytest.mark.parametrize(
    "choice, params, mode, expected",
    [
        ("auto", {"temperature": 1.0}, None, "rollout"),
        ("auto", {"temperature": 0.6}, None, "rescore"),
        ("auto", {"temperature": 0.6}, "raw_logprobs", "rollout"),
        ("rescore", {"temperature": 1.0}, None, "rescore"),
        ("rollout", {"temperature": 0.6}, "raw_logprobs", "rollout"),
        ("rollout", {"temperature": 1.0, "top_p": 1.0, "top_k": -1}, "processed_logprobs", "rollout"),
        ("rollout", {"temperature": 0.0}, None, "rollout"),  # greedy rows carry the raw log-softmax
    ],
)
def test_factual_source(choice, params, mode, expected):
    assert resolve_factual_source(choice, params, mode) == expected


@pytest.mark.parametrize(
    "params, mode",
    [({"temperature": 0.6}, None), ({"temperature": 1.0, "top_p": 0.9}, "processed_logprobs"),
     ({"temperature": 1.0, "repetition_penalty": 1.1}, None), ({"temperature": 1.0}, "processed_logits")],
)
def test_rollout_is_refused_when_provably_not_raw(params, mode):
    with pytest.raises(ConfigError, match=r"algorithm\.infopo\.scoring\.factual=rollout.*raw_logprobs"):
        resolve_factual_source("rollout", params, mode)
