"""The per-step ``infopo/*`` metrics of a real batch, logged by verl's own ``Tracking`` and read back.

Clarify dialogues run end to end through verl's AgentLoopWorker, a Ray RewardLoopWorker and verl's
``compute_advantage`` (``infopo_verl.local.pipeline``); a padding row and a failed-dialogue row (all-zero mask,
rewards left in) are added the way verl's batch balancing and the rollout make them, and the batch goes through
``compute_advantage`` again. ``step_metrics`` is then written by ``Tracking(default_backend=["file"])``, the file is
parsed, and every metric is checked against a value this test computes another way: the outcome from the rollout
records' environment scores, group statistics from loops over rows, the information share and A_info from the
advantages verl wrote, the scoring counters from the records.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from testkit.tiny import tiny_model_path
from verl import DataProto
from verl.trainer.ppo.ray_trainer import compute_advantage
from verl.utils.tracking import Tracking

from infopo_verl.envs.clarify import generate_rows
from infopo_verl.local.pipeline import run_dialogues
from infopo_verl.metrics import record_field, rollout_records, step_metrics

GROUP_SIZE = 3
OVERRIDES = [
    f"actor_rollout_ref.rollout.n={GROUP_SIZE}",
    "actor_rollout_ref.rollout.prompt_length=512",
    "data.max_prompt_length=512",
    "actor_rollout_ref.rollout.response_length=160",
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=4",
    "algorithm.infopo.max_tokens_per_turn=12",
]


def agent_turns(mask_row: list[int]) -> list[tuple[int, int]]:
    """(first, last) of every maximal run of 1 in a response_mask row."""
    turns, start = [], None
    for position, value in enumerate(mask_row + [0]):
        if value and start is None:
            start = position
        elif not value and start is not None:
            turns.append((start, position - 1))
            start = None
    return turns


@pytest.fixture(scope="module")
def rolled_out(tmp_path_factory):
    model_dir = tiny_model_path(tmp_path_factory.mktemp("tiny"))
    config, batch = run_dialogues(model_dir, generate_rows(4, seed=3, split="train"), OVERRIDES, seed=1)
    return config, batch


def with_excluded_rows(batch: DataProto, config) -> DataProto:
    """The batch plus a verl padding row (uid ``pad_0``, zero mask, zero rewards, no record) and a failed dialogue
    (a copy of row 0 in row 0's group with its mask zeroed, its rewards and record kept, the failure recorded)."""
    padding = batch.select_idxs([0])
    padding.batch["response_mask"] = torch.zeros_like(padding.batch["response_mask"])
    padding.batch["rm_scores"] = torch.zeros_like(padding.batch["rm_scores"])
    padding.non_tensor_batch["uid"] = np.array(["pad_0"], dtype=object)
    padding.non_tensor_batch["infopo"] = np.array([None], dtype=object)
    failed = batch.select_idxs([0])
    failed.batch["response_mask"] = torch.zeros_like(failed.batch["response_mask"])
    failed.batch["rm_scores"][0, -1] += 0.75  # a stale score must not reach any statistic
    record = dataclasses.replace(
        failed.non_tensor_batch["infopo"][0], simulator_failure="timed out after 0.5 s", ended_by="simulator_failure",
        env_score=None, trained=False,
    )
    failed.non_tensor_batch["infopo"] = np.array([record], dtype=object)
    mixed = DataProto.concat([batch, padding, failed])
    mixed.batch["token_level_scores"] = mixed.batch["rm_scores"]
    mixed.batch["token_level_rewards"] = mixed.batch["rm_scores"]
    algorithm = config.algorithm
    return compute_advantage(mixed, adv_estimator=algorithm.adv_estimator, num_repeat=GROUP_SIZE, config=algorithm)


def logged_by_verl(metrics: dict, path) -> dict:
    """``metrics`` written by verl's Tracking with the file backend, parsed back."""
    tracking = Tracking(project_name="infopo-test", experiment_name="metrics", default_backend=["file"], config={})
    tracking.log(data=metrics, step=7)
    tracking.logger["file"].finish()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["step"] == 7
    return lines[0]["data"]


def expected_metrics(batch: DataProto, algorithm) -> dict[str, float]:
    """Every metric computed by loops over the batch, without the estimator's code."""
    beta = float(algorithm.infopo.beta)
    temperature = float(algorithm.infopo.gate_temperature)
    eps = float(algorithm.infopo.eps)
    masks = batch.batch["response_mask"].tolist()
    advantages = batch.batch["advantages"].double().tolist()
    uids = list(batch.non_tensor_batch["uid"])
    records = list(batch.non_tensor_batch["infopo"])
    trained = [any(row) for row in masks]

    # R from the rollout record (the environment's score; a failed dialogue scores 0), not from rm_scores.
    outcome = [
        0.0 if record is None or record.simulator_failure else float(record.env_score) for record in records
    ]
    groups: dict[str, list[int]] = {}
    for row, uid in enumerate(uids):
        if trained[row]:
            groups.setdefault(uid, []).append(row)
    gate, outcome_advantage, tied = {}, {}, []
    for members in groups.values():
        values = [outcome[row] for row in members]
        std = torch.tensor(values, dtype=torch.float64).std().item() if len(values) > 1 else 0.0
        mean = sum(values) / len(values) if len(values) > 1 else 0.0
        for row in members:
            gate[row] = 1.0 / (1.0 + math.exp(std / temperature))
            outcome_advantage[row] = (outcome[row] - mean) / ((std if len(values) > 1 else 1.0) + eps)
        if len(values) > 1:
            tied.append(all(value == values[0] for value in values))

    # The information part of every agent token is what verl wrote minus the outcome part.
    info_mass = total_mass = 0.0
    info_advantage_by_turn: dict[int, list[float]] = {}
    for row in range(len(masks)):
        for k, (first, last) in enumerate(agent_turns(masks[row])):
            for position in range(first, last + 1):
                info_part = advantages[row][position] - outcome_advantage[row]
                info_mass += abs(info_part)
                total_mass += abs(outcome_advantage[row]) + abs(info_part)
            if k < len(agent_turns(masks[row])) - 1:
                info_advantage_by_turn.setdefault(k, []).append(
                    (advantages[row][first] - outcome_advantage[row]) / (beta * gate[row])
                )

    scored, scored_by_turn = [], {}
    for row, record in enumerate(records):
        if record is not None and trained[row]:
            for k, gain in enumerate(record.info_gain):
                if gain is not None:
                    scored.append(gain)
                    scored_by_turn.setdefault(k, []).append(gain)
    dialogue_records = [record for record in records if record is not None]
    expected = {
        "infopo/outcome/mean": sum(outcome[row] for row in range(len(masks)) if trained[row]) / sum(trained),
        "infopo/gate/mean": sum(gate[members[0]] for members in groups.values()) / len(groups),
        "infopo/tied_group_fraction": sum(tied) / len(tied),
        "infopo/info_share": info_mass / total_mass,
        "infopo/info_gain/mean": sum(scored) / len(scored),
        "infopo/info_gain/std": torch.tensor(scored, dtype=torch.float64).std().item(),
        "infopo/scoring/turns": sum(g is not None for r in dialogue_records for g in r.info_gain),
        "infopo/scoring/skipped": sum(r.scoring_skipped for r in dialogue_records),
        "infopo/scoring/seconds": sum(r.scoring_seconds for r in dialogue_records) / len(dialogue_records),
        "infopo/simulator_failures": sum(r.simulator_failure is not None for r in dialogue_records),
        "infopo/aborted": sum(r.aborted for r in dialogue_records),
        "infopo/magnitude_scale": 1.0,  # magnitude_bound is off in this config
        "infopo/excluded_rows": sum(not t for t in trained),
        "infopo/trained_rows": sum(trained),
        "infopo/dialogues": len(dialogue_records),
    }
    for k, values in scored_by_turn.items():
        expected[f"infopo/info_gain/turn_{k}"] = sum(values) / len(values)
    for k, values in info_advantage_by_turn.items():
        expected[f"infopo/info_advantage/turn_{k}"] = sum(values) / len(values)
    return expected


def test_step_metrics_through_verl_tracking_match_loops_over_the_batch(rolled_out, tmp_path, monkeypatch):
    config, batch = rolled_out
    batch = with_excluded_rows(batch, config)
    records = list(batch.non_tensor_batch["infopo"])
    # The batch exercises what the metrics claim: scored turns, several groups, the two excluded rows.
    assert sum(g is not None for r in records if r for g in r.info_gain) >= 4
    assert sum(not row.any() for row in batch.batch["response_mask"]) == 2

    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(tmp_path / "metrics.jsonl"))
    logged = logged_by_verl(step_metrics(batch, config.algorithm), tmp_path / "metrics.jsonl")
    expected = expected_metrics(batch, config.algorithm)

    for name in ("infopo/outcome/mean", "infopo/gate/mean", "infopo/tied_group_fraction", "infopo/info_share",
                 "infopo/info_gain/mean", "infopo/info_gain/std", "infopo/info_gain/turn_0",
                 "infopo/info_advantage/turn_0", "infopo/scoring/turns", "infopo/scoring/skipped",
                 "infopo/scoring/seconds", "infopo/simulator_failures", "infopo/aborted", "infopo/magnitude_scale"):
        assert name in logged, f"{name} missing from the logged step: {sorted(logged)}"
    for name, value in expected.items():
        assert logged[name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    assert logged["infopo/simulator_failures"] == 1 and logged["infopo/excluded_rows"] == 2
    per_turn = {name for name in logged if "/turn_" in name}
    assert per_turn == {name for name in expected if "/turn_" in name}


def test_magnitude_scale_is_the_bound_the_estimator_applied(rolled_out):
    """With the released code's bound: the logged scale is min(1, max(std A_ext, 1) / (std A_info + eps)) over the
    agent tokens, computed here from a loop over turns (token mode)."""
    config, batch = rolled_out
    algorithm = copy.deepcopy(config.algorithm)
    algorithm.infopo.normalization = "token"
    algorithm.infopo.magnitude_bound = True
    algorithm.norm_adv_by_std_in_grpo = False  # without the std division the bound binds on small batches
    batch = compute_advantage(copy.deepcopy(batch), adv_estimator="infopo", num_repeat=GROUP_SIZE, config=algorithm)
    metrics = step_metrics(batch, algorithm)

    masks, rewards = batch.batch["response_mask"].tolist(), batch.batch["rm_scores"].double().tolist()
    uids = list(batch.non_tensor_batch["uid"])
    ext_tokens, info_tokens = [], []
    for uid in dict.fromkeys(uids):
        members = [row for row in range(len(uids)) if uids[row] == uid]
        turns = {row: agent_turns(masks[row]) for row in members}
        ends = {row: {last for _, last in turns[row][:-1]} for row in members}
        outcome = {row: sum(v for p, v in enumerate(rewards[row]) if p not in ends[row]) for row in members}
        mean_outcome = sum(outcome.values()) / len(members)
        values = {
            (row, k): rewards[row][last] / (last - first + 1)
            for row in members for k, (first, last) in enumerate(turns[row][:-1])
        }
        pool = [value for (row, k), value in values.items() for _ in range(turns[row][k][1] - turns[row][k][0] + 1)
                if value != 0]
        pool_mean = sum(pool) / len(pool) if len(pool) >= 2 else 0.0
        for row in members:
            for k, (first, last) in enumerate(turns[row]):
                length = last - first + 1
                ext_tokens += [outcome[row] - mean_outcome] * length
                value = values.get((row, k), 0.0)
                info_tokens += [value - pool_mean if value != 0 and len(pool) >= 2 else 0.0] * length
    std_ext = torch.tensor(ext_tokens, dtype=torch.float64).std().item()
    std_info = torch.tensor(info_tokens, dtype=torch.float64).std().item()
    expected = min(1.0, max(std_ext, 1.0) / (std_info + float(algorithm.infopo.eps)))
    assert metrics["infopo/magnitude_scale"] == pytest.approx(expected, rel=1e-9)


def test_records_are_read_from_dicts_typed_records_and_v1_extra_fields(rolled_out):
    _, batch = rolled_out
    records = rollout_records(batch)
    assert records == list(batch.non_tensor_batch["infopo"])

    class Typed:  # a typed record exposes the same fields as attributes
        info_gain = [0.5, None]
        aborted = True

    assert record_field(Typed(), "info_gain") == [0.5, None] and record_field(Typed(), "aborted") is True
    assert record_field(Typed(), "scoring_seconds", 0.0) == 0.0 and record_field(None, "aborted", False) is False
    v1_style = DataProto(
        batch=batch.batch,
        non_tensor_batch={
            "uid": batch.non_tensor_batch["uid"],
            "extra_fields": np.array([{"infopo": record} for record in records], dtype=object),
        },
    )
    assert rollout_records(v1_style) == records
