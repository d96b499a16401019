"""LocalLLMServer against independent Hugging Face forward passes: the fake must behave like verl's vLLM server."""

import asyncio

import pytest
import torch
from testkit.tiny import tiny_model_path
from transformers import AutoModelForCausalLM, AutoTokenizer
from verl.workers.rollout.replica import TokenOutput

from infopo_verl.local.server import LocalLLMServer

MAX_MODEL_LEN = 96
SAMPLING = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_path(tmp_path_factory.mktemp("server"))


@pytest.fixture(scope="module")
def reference(model_dir):
    """An independent copy of the model, for forward passes the server is checked against."""
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


@pytest.fixture
def server(model_dir):
    return LocalLLMServer(model_dir, MAX_MODEL_LEN, seed=0)


@pytest.fixture(scope="module")
def prompt_ids(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = [{"role": "system", "content": "Ask about: cuisine, day."}, {"role": "user", "content": "Book a table."}]
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))


def log_softmax_rows(model, ids, temperature=1.0):
    """Log-softmax of the model's logits at every position of ``ids``: (len(ids), vocab)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits / temperature, dim=-1)


async def test_prompt_logprobs_match_an_independent_forward(server, reference, prompt_ids):
    params = {"max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0, "detokenize": False}
    output = await server.generate("score", prompt_ids=prompt_ids, sampling_params=params)
    assert isinstance(output, TokenOutput) and len(output.token_ids) == 1
    prompt_logprobs = output.extra_fields["prompt_logprobs"]
    assert len(prompt_logprobs) == len(prompt_ids) and all(len(element) == 1 for element in prompt_logprobs)
    expected = log_softmax_rows(reference, prompt_ids)
    for j in range(len(prompt_ids) - 1):  # element j is log p(prompt_ids[j+1] | prompt_ids[:j+1])
        assert prompt_logprobs[j][0] == pytest.approx(expected[j, prompt_ids[j + 1]].item(), abs=1e-4)
        assert output.extra_fields["prompt_ids"][j] == [prompt_ids[j + 1]]
    assert prompt_logprobs[-1] == [0.0]  # verl's dummy for the last prompt token


async def test_prompt_logprobs_ignore_temperature_and_support_top_k(server, reference, prompt_ids):
    params = {"max_tokens": 1, "temperature": 0.3, "prompt_logprobs": 3}
    output = await server.generate("top3", prompt_ids=prompt_ids, sampling_params=params)
    expected = log_softmax_rows(reference, prompt_ids)
    top = torch.topk(expected[0], 3)
    assert output.extra_fields["prompt_ids"][0] == top.indices.tolist()
    assert output.extra_fields["prompt_logprobs"][0] == pytest.approx(top.values.tolist(), abs=1e-4)
    assert output.extra_fields["prompt_logprobs"][-1] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
async def test_sampled_log_probs_are_the_models_log_softmax(server, reference, prompt_ids, temperature):
    params = dict(SAMPLING, temperature=temperature, max_tokens=12, ignore_eos=True)
    output = await server.generate("sample", prompt_ids=prompt_ids, sampling_params=params)
    assert len(output.token_ids) == len(output.log_probs) == 12
    # teacher-force the sampled continuation: processed_logprobs at temperature T = log-softmax(logits / T)
    rows = log_softmax_rows(reference, prompt_ids + output.token_ids, temperature)
    for k, token in enumerate(output.token_ids):
        assert output.log_probs[k] == pytest.approx(rows[len(prompt_ids) - 1 + k, token].item(), abs=1e-4)


async def test_raw_logprobs_mode_ignores_temperature(model_dir, reference, prompt_ids):
    server = LocalLLMServer(model_dir, MAX_MODEL_LEN, logprobs_mode="raw_logprobs")
    params = dict(SAMPLING, temperature=0.5, top_k=5, max_tokens=6, ignore_eos=True)
    output = await server.generate("raw", prompt_ids=prompt_ids, sampling_params=params)
    rows = log_softmax_rows(reference, prompt_ids + output.token_ids)
    for k, token in enumerate(output.token_ids):
        assert output.log_probs[k] == pytest.approx(rows[len(prompt_ids) - 1 + k, token].item(), abs=1e-4)


async def test_top_k_one_is_greedy_and_its_processed_logprob_is_zero(server, reference, prompt_ids):
    params = dict(SAMPLING, top_k=1, max_tokens=5, ignore_eos=True)
    output = await server.generate("topk", prompt_ids=prompt_ids, sampling_params=params)
    assert output.log_probs == pytest.approx([0.0] * 5, abs=1e-6)
    greedy = await server.generate("greedy", prompt_ids=prompt_ids, sampling_params=dict(SAMPLING, temperature=0,
                                                                                          max_tokens=5, ignore_eos=True))
    assert output.token_ids == greedy.token_ids


async def test_greedy_is_deterministic_and_argmax(server, model_dir, reference, prompt_ids):
    params = dict(SAMPLING, temperature=0, max_tokens=10, ignore_eos=True)
    first = await server.generate("a", prompt_ids=prompt_ids, sampling_params=params)
    other_server = LocalLLMServer(model_dir, MAX_MODEL_LEN, seed=123)
    second = await other_server.generate("b", prompt_ids=prompt_ids, sampling_params=dict(params))
    assert first.token_ids == second.token_ids
    rows = log_softmax_rows(reference, prompt_ids + first.token_ids)
    for k, token in enumerate(first.token_ids):
        assert token == int(rows[len(prompt_ids) - 1 + k].argmax())
        # greedy rows get the raw log-softmax (vLLM applies no temperature to them)
        assert first.log_probs[k] == pytest.approx(rows[len(prompt_ids) - 1 + k, token].item(), abs=1e-4)


async def test_sampling_is_reproducible_by_seed(model_dir, prompt_ids):
    params = dict(SAMPLING, max_tokens=15, ignore_eos=True)
    runs = []
    for _ in range(2):
        server = LocalLLMServer(model_dir, MAX_MODEL_LEN, seed=7)
        runs.append([(await server.generate(str(i), prompt_ids=prompt_ids, sampling_params=dict(params))).token_ids
                     for i in range(3)])
    assert runs[0] == runs[1]
    assert len({tuple(ids) for ids in runs[0]}) == 3, "repeated requests of one prompt must differ"
    explicit = LocalLLMServer(model_dir, MAX_MODEL_LEN, seed=99)
    seeded = [(await explicit.generate(str(i), prompt_ids=prompt_ids, sampling_params=dict(params, seed=5))).token_ids
              for i in range(2)]
    assert seeded[0] == seeded[1]


async def test_max_tokens_and_max_new_tokens(server, prompt_ids):
    for key in ("max_tokens", "max_new_tokens"):
        output = await server.generate(key, prompt_ids=prompt_ids, sampling_params=dict(SAMPLING, ignore_eos=True,
                                                                                        **{key: 4}))
        assert len(output.token_ids) == 4 and output.stop_reason == "completed"


async def test_stops_at_eos_and_keeps_the_stop_token(model_dir, prompt_ids):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    server = LocalLLMServer((model, tokenizer), MAX_MODEL_LEN)
    greedy = dict(SAMPLING, temperature=0, max_tokens=6, ignore_eos=True)
    free_run = (await server.generate("free", prompt_ids=prompt_ids, sampling_params=dict(greedy))).token_ids
    stop_token = free_run[2]
    expected = free_run[: free_run.index(stop_token) + 1]  # up to and including the first occurrence
    stopped = await server.generate("stop", prompt_ids=prompt_ids,
                                    sampling_params=dict(greedy, stop_token_ids=[stop_token]))
    assert stopped.token_ids == expected
    # an eos id from generation_config stops generation too (and ignore_eos overrides it)
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, stop_token]
    eos_server = LocalLLMServer((model, tokenizer), MAX_MODEL_LEN)
    assert stop_token in eos_server.eos_token_ids and tokenizer.eos_token_id in eos_server.eos_token_ids
    eos_stopped = await eos_server.generate("eos", prompt_ids=prompt_ids, sampling_params=dict(greedy, ignore_eos=False))
    assert eos_stopped.token_ids == expected and eos_stopped.stop_reason == "completed"
    ignored = await eos_server.generate("ign", prompt_ids=prompt_ids, sampling_params=dict(greedy))
    assert ignored.token_ids == free_run


async def test_refuses_a_prompt_with_no_room_and_clamps_max_tokens(server, prompt_ids):
    too_long = (prompt_ids * MAX_MODEL_LEN)[:MAX_MODEL_LEN]
    with pytest.raises(ValueError, match=rf"(?i)prompt length \({MAX_MODEL_LEN}\).*max_model_len={MAX_MODEL_LEN}"):
        await server.generate("long", prompt_ids=too_long, sampling_params={"max_tokens": 1})
    # one token of room: scoring a sequence of max_model_len - 1 tokens works (SPEC section 3)
    scored = await server.generate("fits", prompt_ids=too_long[:-1], sampling_params={"max_tokens": 1,
                                                                                      "prompt_logprobs": 0})
    assert len(scored.token_ids) == 1 and len(scored.extra_fields["prompt_logprobs"]) == MAX_MODEL_LEN - 1
    # like verl's server, a too-large max_tokens is clamped to the room left, not refused
    room = 3
    clamped = await server.generate("clamp", prompt_ids=too_long[: MAX_MODEL_LEN - room],
                                    sampling_params=dict(SAMPLING, max_tokens=50, ignore_eos=True))
    assert len(clamped.token_ids) == room


@pytest.mark.parametrize(
    "params, error",
    [
        ({"temperature": -1.0}, ValueError),
        ({"top_p": 0.0}, ValueError),
        ({"max_tokens": 0}, ValueError),
        ({"prompt_logprobs": -1}, ValueError),
        ({"max_tokenz": 3}, ValueError),
        ({"n": 2}, NotImplementedError),
        ({"presence_penalty": 0.5}, NotImplementedError),
    ],
)
async def test_bad_sampling_params_are_refused(server, prompt_ids, params, error):
    with pytest.raises(error):
        await server.generate("bad", prompt_ids=prompt_ids, sampling_params=params)


async def test_refuses_multimodal_input(server, prompt_ids):
    with pytest.raises(ValueError, match="text-only"):
        await server.generate("mm", prompt_ids=prompt_ids, sampling_params={}, image_data=[object()])


async def test_does_not_mutate_sampling_params(server, prompt_ids):
    params = dict(SAMPLING, max_tokens=2)
    await server.generate("m", prompt_ids=prompt_ids, sampling_params=params)
    assert params == dict(SAMPLING, max_tokens=2)


async def test_concurrent_requests_match_sequential_ones(model_dir, prompt_ids):
    """Interleaved requests give the same samples as one-by-one requests (same seeds, same prompts)."""
    prompts = [prompt_ids, prompt_ids[:-3], prompt_ids, prompt_ids[:-5]]
    params = dict(SAMPLING, max_tokens=8, ignore_eos=True, prompt_logprobs=0)

    sequential_server = LocalLLMServer(model_dir, MAX_MODEL_LEN, seed=3)
    sequential = [await sequential_server.generate(str(i), prompt_ids=p, sampling_params=dict(params))
                  for i, p in enumerate(prompts)]
    concurrent_server = LocalLLMServer(model_dir, MAX_MODEL_LEN, seed=3)
    concurrent = await asyncio.gather(*[
        concurrent_server.generate(str(i), prompt_ids=p, sampling_params=dict(params)) for i, p in enumerate(prompts)
    ])
    for one, other in zip(sequential, concurrent):
        assert one.token_ids == other.token_ids
        assert one.log_probs == pytest.approx(other.log_probs, abs=1e-5)
        flat = [value for element in one.extra_fields["prompt_logprobs"] for value in element]
        other_flat = [value for element in other.extra_fields["prompt_logprobs"] for value in element]
        assert flat == pytest.approx(other_flat, abs=1e-5)
    assert concurrent_server.num_requests == len(prompts)


# ---- automatic prefix caching: vLLM's cost model and table shapes ----

SCORE = {"max_tokens": 1, "prompt_logprobs": 0, "detokenize": False}
IDS = [(7 * position + 3) % 200 + 5 for position in range(60)]  # 60 arbitrary in-vocabulary ids


def reference_rows(model, ids):
    """[log p(ids[j+1] | ids[:j+1]) for j < len(ids) - 1] from an independent forward pass."""
    rows = log_softmax_rows(model, ids)
    return [rows[j, ids[j + 1]].item() for j in range(len(ids) - 1)]


async def test_scoring_requests_skip_reading_the_cache_unless_told(server):
    await server.generate("warm", prompt_ids=IDS[:40], sampling_params={"max_tokens": 1})
    default = await server.generate("score", prompt_ids=IDS[:50], sampling_params=dict(SCORE))
    assert default.extra_fields["num_cached_tokens"] == 0
    assert server.requests_log[-1].computed_prefill_tokens == 50
    # ... but it still wrote its blocks: a generation request (which reads the cache by default) finds the 3 full
    # blocks of IDS[:50]
    generation = await server.generate("gen", prompt_ids=IDS[:50], sampling_params={"max_tokens": 1})
    assert generation.extra_fields["num_cached_tokens"] == 48
    assert server.requests_log[-1].computed_prefill_tokens == 50 - 48


@pytest.mark.parametrize("runner", ["v1", "v2"])
async def test_cached_rows_are_garbage_in_v1_and_absent_in_v2(model_dir, reference, runner):
    server = LocalLLMServer(model_dir, MAX_MODEL_LEN, runner=runner)
    await server.generate("warm", prompt_ids=IDS[:40], sampling_params={"max_tokens": 1})
    output = await server.generate("score", prompt_ids=IDS[:50],
                                   sampling_params=dict(SCORE, skip_reading_prefix_cache=False))
    h = output.extra_fields["num_cached_tokens"]
    assert h == 32 and server.prefill_tokens_computed == 40 + (50 - 32)
    expected = reference_rows(reference, IDS[:50])
    table, ids = output.extra_fields["prompt_logprobs"], output.extra_fields["prompt_ids"]
    if runner == "v1":
        assert len(table) == 50
        computed = range(h, 49)
        # the rows of cached positions were never computed: reading them gives wrong values and wrong ids
        assert all(abs(table[j][0] - expected[j]) > 1e-3 for j in range(h))
        assert sum(ids[j][0] == IDS[j + 1] for j in range(h)) < h // 2
    else:
        assert len(table) == 50 - h
        computed = range(0, 49 - h)
    offset = 0 if runner == "v1" else h
    for row in computed:
        assert table[row][0] == pytest.approx(expected[row + offset], abs=1e-4)
        assert ids[row] == [IDS[row + offset + 1]]


async def test_a_hit_never_covers_the_last_prompt_token(server):
    await server.generate("warm", prompt_ids=IDS[:48], sampling_params={"max_tokens": 1})
    cached = dict(SCORE, skip_reading_prefix_cache=False)
    assert (await server.generate("a", prompt_ids=IDS[:48], sampling_params=dict(cached))).extra_fields[
        "num_cached_tokens"] == 32  # 48 - 1 = 47 tokens may hit: 2 full blocks
    assert (await server.generate("b", prompt_ids=IDS[:49], sampling_params=dict(cached))).extra_fields[
        "num_cached_tokens"] == 48
    assert (await server.generate("c", prompt_ids=[1] + IDS[1:49], sampling_params=dict(cached))).extra_fields[
        "num_cached_tokens"] == 0  # the chained hash: a different first token invalidates every block after it


async def test_generated_tokens_are_cached_except_the_last(server):
    output = await server.generate("gen", prompt_ids=IDS[:10],
                                   sampling_params={"max_tokens": 23, "ignore_eos": True})
    assert len(output.token_ids) == 23
    # KV exists for 10 + 22 tokens: two full blocks, which a request over the whole dialogue then reads
    follow_up = IDS[:10] + list(output.token_ids) + [5]
    again = await server.generate("next", prompt_ids=follow_up, sampling_params={"max_tokens": 1})
    assert again.extra_fields["num_cached_tokens"] == 32


async def test_no_prefix_caching_means_no_hits(model_dir):
    server = LocalLLMServer(model_dir, MAX_MODEL_LEN, prefix_caching=False)
    await server.generate("warm", prompt_ids=IDS[:40], sampling_params={"max_tokens": 1})
    output = await server.generate("gen", prompt_ids=IDS[:40], sampling_params={"max_tokens": 1})
    assert output.extra_fields["num_cached_tokens"] == 0 and server.prefill_tokens_computed == 80


async def test_aborted_requests_return_no_prompt_logprobs(server):
    server.abort_next(1)
    await server.generate("gen", prompt_ids=IDS[:20], sampling_params={"max_tokens": 1})  # not a scoring request
    aborted = await server.generate("score", prompt_ids=IDS[:20], sampling_params=dict(SCORE))
    assert aborted.stop_reason == "aborted" and aborted.token_ids == [] and "prompt_logprobs" not in aborted.extra_fields
    assert server.requests_log[-1].aborted and server.requests_log[-1].computed_prefill_tokens == 0
    assert (await server.generate("again", prompt_ids=IDS[:20], sampling_params=dict(SCORE))).stop_reason == "completed"


async def test_sglang_mode_refuses_vllm_only_keys_and_duplicate_ids(model_dir, reference):
    server = LocalLLMServer(model_dir, MAX_MODEL_LEN, engine="sglang")
    for key, value in (("detokenize", False), ("skip_reading_prefix_cache", False), ("seed", 1)):
        with pytest.raises(TypeError, match=key):
            await server.generate("bad", prompt_ids=IDS[:20], sampling_params={"max_tokens": 1, key: value})
    sglang_score = {"max_tokens": 1, "prompt_logprobs": 0, "temperature": 1.0, "top_p": 1.0, "top_k": -1}
    await server.generate("warm", prompt_ids=IDS[:40], sampling_params={"max_tokens": 1})
    output = await server.generate("score", prompt_ids=IDS[:40], sampling_params=dict(sglang_score))
    assert "num_cached_tokens" not in output.extra_fields  # verl's SGLang server does not report it
    assert server.requests_log[-1].computed_prefill_tokens == 40  # logprob_start_len=0: no cache reuse
    expected = reference_rows(reference, IDS[:40])
    assert [row[0] for row in output.extra_fields["prompt_logprobs"][:-1]] == pytest.approx(expected, abs=1e-4)
    with pytest.raises(ValueError, match="Duplicate request ID"):
        await asyncio.gather(*(server.generate("same", prompt_ids=IDS[:30], sampling_params=dict(sglang_score))
                               for _ in range(2)))
    server.abort_next(1)
    assert (await server.generate("x", prompt_ids=IDS[:20], sampling_params=dict(sglang_score))).stop_reason == "abort"
