"""The ``infopo`` reward manager inside verl's own ``RewardLoopWorker``.

- On converted UserRL rows (FunctionGym: deterministic, no simulator) rolled out end to end, the outcome is the
  environment's final score the rollout recorded, and ``reward_extra_info`` has the same keys for every sample.
- A sample that no ``infopo_user`` rollout produced falls back to verl's own scoring (``default_compute_score``).
- A dialogue whose simulator failed, or whose generation was aborted, scores 0 with the failure flagged.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from testkit.tiny import tiny_model_path
from verl import DataProto
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

from infopo_verl.cli import main
from infopo_verl.config import ConfigError
from infopo_verl.local.pipeline import compose_config, run_dialogues
from infopo_verl.envs.base import TASK_METRIC_KEYS
from infopo_verl.reward_manager import EXTRA_INFO_KEYS
from infopo_verl.rollout.record import RolloutRecord

USERRL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "userrl"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return tiny_model_path(tmp_path_factory.mktemp("tiny"))


@pytest.mark.skipif(not USERRL.is_dir(), reason=f"UserRL data folder {USERRL} is absent")
def test_outcome_of_converted_userrl_rows_is_the_environment_score(model_dir, tmp_path):
    out = tmp_path / "userrl"
    assert main(["prepare", "userrl", "--source", str(USERRL), "--out", str(out), "--datasets", "function_multiturn",
                 "--no-progress"]) == 0
    rows = pq.read_table(out / "function_multiturn" / "test.parquet").to_pylist()[:2]
    overrides = [
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.rollout.prompt_length=2560",
        "data.max_prompt_length=2560",
        "actor_rollout_ref.rollout.response_length=480",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3",
        "algorithm.infopo.max_tokens_per_turn=24",
    ]
    _, batch = run_dialogues(model_dir, rows, overrides)
    assert len(batch) == 4
    for key in EXTRA_INFO_KEYS:
        assert len(batch.non_tensor_batch[key]) == 4
    for row in range(4):
        record = RolloutRecord.from_batch(batch.non_tensor_batch, row)
        assert record.family == "function"
        assert batch.non_tensor_batch["outcome"][row] == pytest.approx(record.env_score)
        # UserRL scores a dialogue by the sum of its step rewards (FunctionGym pays 1.0 for a right answer).
        assert record.env_score == pytest.approx(sum(record.step_rewards))
        # The untrained model cannot call the tool: the gym tells it why instead of failing the dialogue.
        assert any("interact_with_env" in text or "tool" in text.lower() for text in record.feedback_texts if text)


def one_sample(tokenizer, data_source: str, ground_truth: str, response: str, extra_fields: dict) -> DataProto:
    prompt = tokenizer("What is 6 times 7?")["input_ids"]
    answer = tokenizer(response)["input_ids"]
    input_ids = torch.tensor([prompt + answer])
    return DataProto.from_dict(
        tensors={
            "prompts": torch.tensor([prompt]),
            "responses": torch.tensor([answer]),
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "position_ids": torch.arange(input_ids.shape[1]).unsqueeze(0),
        },
        non_tensors={
            "data_source": np.array([data_source], dtype=object),
            "reward_model": np.array([{"ground_truth": ground_truth, "style": "rule"}], dtype=object),
            "extra_info": np.array([{}], dtype=object),
            "tool_extra_fields": np.array([extra_fields], dtype=object),
            "__num_turns__": np.array([2]),
        },
    )


@pytest.fixture(scope="module")
def reward_worker(model_dir):
    """A RewardLoopWorker bound to one event loop for its life, as inside its Ray actor."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    worker = RewardLoopWorker(compose_config(model_dir))
    worker.score = lambda data: loop.run_until_complete(worker.compute_score(data))
    yield worker
    asyncio.set_event_loop(None)
    loop.close()


@pytest.mark.parametrize(("response", "expected"), [("6 times 7 is #### 42", 1.0), ("#### 41", 0.0)])
def test_samples_without_a_rollout_record_use_verls_own_scoring(reward_worker, response, expected):
    data = one_sample(reward_worker.input_tokenizer, "openai/gsm8k", "42", response, {})
    result = reward_worker.score(data)
    assert result["reward_score"] == expected
    assert set(result["reward_extra_info"]) == set(EXTRA_INFO_KEYS) | set(TASK_METRIC_KEYS)
    assert result["reward_extra_info"]["info_gain_count"] == 0.0


def make_record(turns: int, **fields) -> RolloutRecord:
    """A record of ``turns`` two-token agent turns with two feedback tokens after each but the last."""
    values = dict(
        family="clarify", turn_spans=[(4 * k, 4 * k + 1) for k in range(turns)],
        feedback_spans=[(4 * k + 2, 4 * k + 3) for k in range(turns - 1)] + [None], info_gain=[None] * turns,
        turn_rewards=[], eligible_turns=turns - 1, scoring_skipped=0, env_error_turns=0, scoring_tokens=0,
        scoring_requests=0, scoring_seconds=0.0, step_rewards=[0.0] * turns, env_steps=turns, env_score=None, task_metrics={},
        ended_by="done", simulator_failure=None, aborted=False, validate=False, trained=True, empty_turns=0,
        agent_texts=["..."] * turns, feedback_texts=["..."] * (turns - 1) + [None],
    )
    return RolloutRecord(**{**values, **fields})


@pytest.mark.parametrize("failure", ["simulator", "aborted"])
def test_a_failed_dialogue_scores_zero_and_is_flagged(reward_worker, failure):
    if failure == "simulator":
        record = make_record(2, simulator_failure="openai user simulator: HTTP 500 (2 attempts)",
                             ended_by="simulator_failure", info_gain=[0.25, None], trained=False)
    else:
        record = make_record(2, aborted=True, ended_by="aborted", info_gain=[0.25, None], trained=False)
    data = one_sample(reward_worker.input_tokenizer, "infopo_clarify", "{}", "ANSWER:", {"infopo": record})
    result = reward_worker.score(data)
    assert result["reward_score"] == 0.0
    info = result["reward_extra_info"]
    assert info["simulator_failed"] == float(failure == "simulator") and info["aborted"] == float(failure == "aborted")
    assert info["info_gain_sum"] == 0.25 and info["turns"] == 2.0


def test_the_recorded_environment_score_is_the_outcome(reward_worker):
    record = make_record(3, env_score=0.75, info_gain=[0.5, 0.1, None], scoring_skipped=1)
    data = one_sample(reward_worker.input_tokenizer, "infopo_clarify", "{}", "ANSWER:", {"infopo": record})
    result = reward_worker.score(data)
    assert result["reward_score"] == 0.75
    info = result["reward_extra_info"]
    assert info["info_gain_mean"] == pytest.approx(0.3) and info["info_gain_count"] == 2.0
    assert info["scoring_skipped"] == 1.0 and info["simulator_failed"] == 0.0 and info["aborted"] == 0.0


def test_a_record_that_crossed_a_serialiser_as_a_mapping_is_read_back(reward_worker):
    """verl's v1 path hands the record on as a dict (Pydantic's model_dump, TransferQueue): same outcome."""
    import dataclasses

    record = make_record(2, env_score=0.5, info_gain=[0.2, None])
    data = one_sample(reward_worker.input_tokenizer, "infopo_clarify", "{}", "ANSWER:",
                      {"infopo": dataclasses.asdict(record)})
    result = reward_worker.score(data)
    assert result["reward_score"] == 0.5 and result["reward_extra_info"]["info_gain_sum"] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("algorithm.use_kl_in_reward=true", "algorithm.use_kl_in_reward"),
        ("algorithm.infopo.gate_temperature=-1", "algorithm.infopo.gate_temperature"),
        ("+algorithm.infopo.betta=0.3", "algorithm.infopo.betta"),
    ],
)
def test_bad_infopo_config_stops_the_reward_worker_at_start_up(model_dir, override, message):
    with pytest.raises(ConfigError, match=message):
        RewardLoopWorker(compose_config(model_dir, [override]))


@pytest.mark.parametrize(
    ("task_metrics", "expected"),
    [({"pass": 0.6, "succ": 0.0}, {"pass": 0.6, "succ": 0.0}), ({}, {"pass": None, "succ": None})],
    ids=["colbench", "a family without task metrics"],
)
def test_task_metrics_are_columns_of_every_sample(reward_worker, task_metrics, expected):
    record = make_record(1, env_score=0.6, task_metrics=task_metrics)
    data = one_sample(reward_worker.input_tokenizer, "colbench_backend", "", "I WANT TO ANSWER:", {"infopo": record})
    info = reward_worker.score(data)["reward_extra_info"]
    # Same keys whatever the family; None (which verl drops before averaging per data_source) where it has none.
    assert set(info) == set(EXTRA_INFO_KEYS) | set(TASK_METRIC_KEYS)
    assert {key: info[key] for key in TASK_METRIC_KEYS} == expected
