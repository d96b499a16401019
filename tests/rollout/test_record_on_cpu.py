"""The rollout record survives every way verl 0.9.1 moves it, and is read back through one accessor."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch
from tensordict import NonTensorData

from infopo_verl.rollout.output import InfoPOAgentLoopOutput
from infopo_verl.rollout.record import RECORD_KEY, RolloutRecord


def example() -> RolloutRecord:
    return RolloutRecord(
        family="clarify", turn_spans=[(0, 3), (7, 9), (12, 13)], feedback_spans=[(4, 6), (10, 11), None],
        info_gain=[0.25, None, None], turn_rewards=[(3, 0.25)], eligible_turns=2, scoring_skipped=0,
        env_error_turns=1, scoring_tokens=40, scoring_requests=1, scoring_seconds=0.5, step_rewards=[0.0, 0.0, 1.0],
        env_steps=3, env_score=1.0, task_metrics={}, ended_by="done", simulator_failure=None, aborted=False, validate=False,
        trained=True, empty_turns=0, agent_texts=["a", "b", "ANSWER: {}"], feedback_texts=["x", "y", None],
    )


def test_pickle_round_trip_as_ray_sends_it():
    record = example()
    assert pickle.loads(pickle.dumps({RECORD_KEY: record}))[RECORD_KEY] == record


def test_a_mapping_from_a_serialiser_is_rebuilt_exactly():
    record = example()
    as_json_would = {key: (list(map(list, value)) if key in ("turn_rewards",) else value)
                     for key, value in dataclasses.asdict(record).items()}
    as_json_would["turn_spans"] = [list(span) for span in record.turn_spans]
    assert RolloutRecord.from_extra_fields({RECORD_KEY: as_json_would}) == record
    with pytest.raises(ValueError, match="aborted"):
        RolloutRecord.from_extra_fields({RECORD_KEY: {k: v for k, v in as_json_would.items() if k != "aborted"}})


def test_every_place_verl_keeps_it_reads_back_through_the_accessor():
    record = example()
    legacy = {RECORD_KEY: np.array([record], dtype=object)}  # AgentLoopWorker._postprocess's object column
    reward_loop = {"tool_extra_fields": np.array([{RECORD_KEY: record, "raw_prompt": []}], dtype=object)}
    v1 = {"extra_fields": [NonTensorData({RECORD_KEY: dataclasses.asdict(record)})]}  # TransferQueue hands dicts
    for non_tensor_batch in (legacy, reward_loop, v1):
        assert RolloutRecord.from_batch(non_tensor_batch, 0) == record
    assert RolloutRecord.from_batch({"uid": np.array(["u"])}, 0) is None  # another agent loop's row
    assert RolloutRecord.from_extra_fields({"turn_scores": []}) is None


def test_as_dict_keeps_the_typed_record_and_lays_out_its_turn_rewards():
    record = example()
    output = InfoPOAgentLoopOutput(
        prompt_ids=[1, 2], response_ids=list(range(14)), response_mask=[1] * 14, reward_score=1.0,
        metrics={}, extra_fields={RECORD_KEY: record},
    )
    stored = output.as_dict()
    assert stored["extra_fields"][RECORD_KEY] == record and isinstance(stored["extra_fields"][RECORD_KEY], RolloutRecord)
    expected = torch.zeros(14)
    expected[3], expected[13] = 0.25, 1.0
    torch.testing.assert_close(stored["rm_scores"], expected)
