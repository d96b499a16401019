"""Turn spans come from the final response_mask, whatever the token builder and the engine did, through verl's
AgentLoopWorker (InfoPO's legacy-trainer worker) and a Ray RewardLoopWorker on CPU.

- A continuous-token builder that removes the agent's stop token when feedback follows (what verl's GLM builder
  does with ``<|observation|>``): every r_t still sits on an agent token, and the scored a_(t+1) is exactly what
  the batch holds.
- A generation that comes back aborted, or with no token: the dialogue ends there as ``aborted``, recorded, with
  an all-zero mask (unless ``train_on_failures``).
- ``scoring.env_errors=false``: turns answered by the environment's own error message are not scored, counted.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import verl.experimental.agent_loop.agent_loop as verl_agent_loop
from testkit.spy import AbortingServer, SpyServer, TurnClosingServer
from testkit.tiny import tiny_model_path
from verl.utils.tokenizer.continuous_token import MergeResult, QwenContinuousTokenBuilder

from infopo_verl.core.turns import row_spans
from infopo_verl.envs.clarify import generate_rows
from infopo_verl.envs.userrl.common import INTERACT_TOOL
from infopo_verl.local.pipeline import LocalPipeline, compose_config, load_batch
from infopo_verl.local.server import LocalLLMServer
from infopo_verl.rollout.record import RolloutRecord

BASE_OVERRIDES = [
    "actor_rollout_ref.rollout.n=2",
    "actor_rollout_ref.rollout.prompt_length=512",
    "data.max_prompt_length=512",
    "actor_rollout_ref.rollout.response_length=160",
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=4",
    "algorithm.infopo.max_tokens_per_turn=16",
    "actor_rollout_ref.rollout.temperature=1.0",
]


class StopTokenDroppingBuilder(QwenContinuousTokenBuilder):
    """verl's Qwen builder, but with GLM's boundary rule: a runtime prefix that ends with the stop token loses it
    before the next context message (``GLMContinuousTokenBuilder._merge_context_token_ids`` does this for
    ``<|observation|>`` / ``<|user|>``)."""

    def _merge_context_token_ids(self, runtime_token_ids, appended_token_ids, **kwargs):
        if runtime_token_ids and runtime_token_ids[-1] == self._im_end_id:
            return MergeResult(
                token_ids=list(runtime_token_ids[:-1]) + list(appended_token_ids),
                appended_token_count=len(appended_token_ids),
                kind="context",
                removed_prefix_token_count=1,
            )
        return super()._merge_context_token_ids(runtime_token_ids, appended_token_ids, **kwargs)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return tiny_model_path(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def clarify_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "clarify.parquet"
    pd.DataFrame(generate_rows(2, seed=3, split="test")).to_parquet(path)
    return path


def rollout(config, spy, data_file):
    pipeline = LocalPipeline(config, spy)
    try:
        batch = pipeline.rollout(load_batch(config, [data_file], pipeline.tokenizer))
    finally:
        pipeline.close()
    return batch, [RolloutRecord.from_batch(batch.non_tensor_batch, row) for row in range(len(batch))]


def response_of(batch, row) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, response ids, response mask) of ``row`` without padding."""
    prompt_width = batch.batch["prompts"].shape[1]
    attention = batch.batch["attention_mask"][row]
    prompt = batch.batch["prompts"][row][attention[:prompt_width].bool()].tolist()
    length = int(attention[prompt_width:].sum())
    return prompt, batch.batch["responses"][row][:length].tolist(), batch.batch["response_mask"][row][:length].tolist()


def test_a_builder_that_drops_the_stop_token_keeps_every_turn_reward_on_an_agent_token(
    model_dir, clarify_file, monkeypatch
):
    monkeypatch.setattr(verl_agent_loop, "create_continuous_token_builder",
                        lambda tokenizer, **kwargs: StopTokenDroppingBuilder(tokenizer))
    # Away from temperature 1 the factual side is rescored from the batch's own ids, never from sampling log-probs.
    config = compose_config(model_dir, [*BASE_OVERRIDES, "actor_rollout_ref.rollout.temperature=0.8"])
    server = LocalLLMServer(model_dir, max_model_len=672, seed=7)
    stop_id = server.tokenizer.convert_tokens_to_ids("<|im_end|>")
    spy = TurnClosingServer(server, stop_id)
    batch, records = rollout(config, spy, clarify_file)

    dropped = measured = 0
    for row, record in enumerate(records):
        prompt, response, mask = response_of(batch, row)
        assert list(record.turn_spans) == row_spans(mask)[0]  # the record's turns are the mask's turns
        for position, value in record.turn_rewards:
            assert mask[position] == 1 and mask[position + 1] == 0  # r_t on the last agent token of its turn
            assert float(batch.batch["rm_scores"][row, position]) == pytest.approx(value, abs=1e-6)
            measured += 1
        for (start, end), feedback in zip(record.turn_spans, record.feedback_texts):
            generated = [r[2] for r in spy.agent_requests() if r[0] == prompt + response[:start]]
            assert generated, f"row {row}: no generation produced the turn at {start}"
            if feedback is not None:
                # The builder removed the closing stop token: the turn in the batch is one token shorter. (The
                # rollouts of one prompt share their first context, so any of its generations may be this one.)
                assert any(ids[-1] == stop_id and response[start : end + 1] == ids[:-1] for ids in generated)
                dropped += 1
        # The scored a_(t+1) is exactly the tokens of turn t+1 in the batch, after the placeholder context.
        for turn, gain in enumerate(record.info_gain):
            if gain is not None:
                start, end = record.turn_spans[turn + 1]
                next_ids = response[start : end + 1]
                assert any(r[0][-len(next_ids):] == next_ids and r[0] != prompt + response[: end + 1]
                           for r in spy.scoring_requests())
    assert dropped > 0 and measured > 0


@pytest.mark.parametrize("empty", [False, True], ids=["aborted", "zero_tokens"])
def test_an_aborted_generation_ends_the_dialogue_as_aborted_with_no_loss(model_dir, clarify_file, empty):
    config = compose_config(model_dir, BASE_OVERRIDES)
    spy = AbortingServer(LocalLLMServer(model_dir, max_model_len=672, seed=7), abort_at=2, empty=empty)
    batch, records = rollout(config, spy, clarify_file)
    aborted = [row for row, record in enumerate(records) if record.aborted]
    # Every dialogue that reached a third generation was cut there.
    assert aborted and all(records[row].ended_by == "aborted" for row in aborted)
    assert all(record.ended_by == "done" for record in records if not record.aborted)
    for row in aborted:
        record = records[row]
        assert len(record.turn_spans) == 2 and record.env_score is None and not record.trained
        assert record.eligible_turns == 1 and record.info_gain == [None, None]
        assert int(batch.batch["response_mask"][row].sum()) == 0
        assert batch.non_tensor_batch["aborted"][row] == 1.0 and batch.non_tensor_batch["outcome"][row] == 0.0
        assert float(batch.batch["rm_scores"][row].abs().sum()) == 0.0
    assert spy.scoring_requests() == []  # an eligible turn of a dialogue without loss is not scored


def test_an_abort_before_the_first_token_still_gives_verl_a_response(model_dir, clarify_file):
    config = compose_config(model_dir, BASE_OVERRIDES)
    spy = AbortingServer(LocalLLMServer(model_dir, max_model_len=672, seed=7), abort_at=0)
    batch, records = rollout(config, spy, clarify_file)
    for row, record in enumerate(records):
        _, response, mask = response_of(batch, row)
        assert record.aborted and record.turn_spans == [] and record.env_steps == 0
        assert len(response) == 1 and mask == [0]  # one padding token, masked out


def test_train_on_failures_keeps_an_aborted_dialogue_trained(model_dir, clarify_file):
    config = compose_config(model_dir, [*BASE_OVERRIDES, "algorithm.infopo.train_on_failures=true"])
    spy = AbortingServer(LocalLLMServer(model_dir, max_model_len=672, seed=7), abort_at=1)
    batch, records = rollout(config, spy, clarify_file)
    aborted = [row for row, record in enumerate(records) if record.aborted]
    assert aborted
    for row in aborted:
        _, _, mask = response_of(batch, row)
        assert records[row].trained and row_spans(mask)[0] == list(records[row].turn_spans)
        assert sum(mask) > 0 and batch.non_tensor_batch["outcome"][row] == 0.0


@pytest.fixture(scope="module")
def function_file(tmp_path_factory) -> Path:
    """One FunctionGym task of our own, in the layout ``infopo-verl prepare userrl`` writes."""
    task = {"id": "sum-of-two", "rule": "a + b", "test_case": [1, 2, 3, 4], "expected_result": 3}
    row = {
        "data_source": "infopo_function_test",
        "prompt": [
            {"role": "system", "content": "Find the hidden rule: call interact_with_env with a choice and a content."},
            {"role": "user", "content": "What does the rule give on the test case?"},
        ],
        "ability": "reasoning",
        "reward_model": {"style": "rule", "ground_truth": "3"},
        "agent_name": "infopo_user",
        "extra_info": {"index": 0, "infopo": {"env": "function", "task": json.dumps(task), "tools": [INTERACT_TOOL]}},
    }
    path = tmp_path_factory.mktemp("function") / "function.parquet"
    pd.DataFrame([row]).to_parquet(path)
    return path


def function_rollout(model_dir, function_file, env_errors: bool):
    config = compose_config(model_dir, [
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.rollout.prompt_length=1024",
        "data.max_prompt_length=1024",
        "actor_rollout_ref.rollout.response_length=240",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3",
        "algorithm.infopo.max_tokens_per_turn=24",
        f"algorithm.infopo.scoring.env_errors={str(env_errors).lower()}",
    ])
    spy = SpyServer(LocalLLMServer(model_dir, max_model_len=1264, seed=7))
    return spy, *rollout(config, spy, function_file)


def test_env_error_turns_are_left_out_of_scoring_and_counted(model_dir, function_file):
    """The untrained model never makes the tool call FunctionGym needs: every reply is the gym's own error."""
    spy, batch, records = function_rollout(model_dir, function_file, env_errors=False)
    assert sum(record.eligible_turns for record in records) > 0
    for record in records:
        assert all("tool" in text.lower() for text in record.feedback_texts if text)
        assert record.env_error_turns == record.eligible_turns and record.measured_gains == []
    assert spy.scoring_requests() == []

    # Default (the released code's behaviour): the same turns are scored.
    spy, batch, records = function_rollout(model_dir, function_file, env_errors=True)
    assert all(record.env_error_turns == 0 for record in records)
    assert sum(len(record.measured_gains) for record in records) == sum(
        record.eligible_turns - record.scoring_skipped for record in records) > 0
    assert spy.scoring_requests()
