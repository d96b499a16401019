"""Validation is outcome-only, on both of verl's trainers, through verl's own workers.

verl tells only ``AgentLoopWorker._run_agent_loop`` whether a rollout is validation. InfoPO's workers pass that
flag to the loop; these tests drive them the way each trainer does and count the scoring requests that reach the
inference server (the only stand-in):

- legacy trainer: ``InfoPOAgentLoopWorker.generate_sequences`` on a batch whose ``meta_info["validate"]`` is set
  (what ``RayPPOTrainer._validate`` sends), rewards from a Ray ``RewardLoopWorker``, ``rm_scores`` from
  ``_postprocess``;
- v1 trainer: ``InfoPOAgentLoopWorkerTQ`` (verl's TransferQueue worker) on the TensorDict its ``_validate`` sends,
  with a real TransferQueue; the rows are read back from the ``val`` partition, as verl's trainer reads them.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import torch
from testkit.spy import SpyServer
from testkit.tiny import tiny_model_path

from infopo_verl.envs.clarify import generate_rows
from infopo_verl.local.pipeline import LocalPipeline, compose_config, load_batch
from infopo_verl.local.server import LocalLLMServer
from infopo_verl.rollout.record import RolloutRecord

BASE_OVERRIDES = [
    "actor_rollout_ref.rollout.n=2",
    "actor_rollout_ref.rollout.val_kwargs.n=2",
    # verl's default validation sampling is greedy; sample, so the dialogues differ as in training.
    "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
    "actor_rollout_ref.rollout.val_kwargs.do_sample=true",
    "actor_rollout_ref.rollout.prompt_length=512",
    "data.max_prompt_length=512",
    "actor_rollout_ref.rollout.response_length=160",
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=4",
    "algorithm.infopo.max_tokens_per_turn=16",
]
MAX_MODEL_LEN = 672


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return tiny_model_path(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "clarify.parquet"
    pd.DataFrame(generate_rows(2, seed=3, split="test")).to_parquet(path)
    return path


def legacy_rollout(model_dir, data_file, *, validate: bool, overrides=()):
    config = compose_config(model_dir, [*BASE_OVERRIDES, "trainer.use_v1=false",
                                        "actor_rollout_ref.rollout.agent.agent_loop_manager_class="
                                        "infopo_verl.rollout.output.InfoPOAgentLoopManager", *overrides])
    spy = SpyServer(LocalLLMServer(model_dir, max_model_len=MAX_MODEL_LEN, seed=7))
    pipeline = LocalPipeline(config, spy)
    try:
        batch = load_batch(config, [data_file], pipeline.tokenizer)
        batch.meta_info["validate"] = validate  # what RayPPOTrainer._validate sets
        batch = pipeline.rollout(batch)
    finally:
        pipeline.close()
    records = [RolloutRecord.from_batch(batch.non_tensor_batch, row) for row in range(len(batch))]
    return spy, batch, records


def stock_config(model_dir, overrides):
    """verl's own ppo_trainer.yaml with plain overrides only (no infopo_trainer.yaml), set up for a CPU run."""
    from hydra import compose, initialize_config_module

    plain = [
        f"actor_rollout_ref.model.path={model_dir}",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "trainer.n_gpus_per_node=0",
        "trainer.device=cpu",
        "algorithm.adv_estimator=infopo",
        "reward.reward_manager.name=infopo",
        "actor_rollout_ref.rollout.agent.default_agent_loop=infopo_user",
        "actor_rollout_ref.rollout.multi_turn.enable=true",
        "actor_rollout_ref.rollout.name=vllm",  # mandatory in verl's config; the CPU server stands in for it
        "+algorithm.infopo.max_tokens_per_turn=16",
        *overrides,
    ]
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=plain)


def response_length(batch, row) -> int:
    prompt_width = batch.batch["prompts"].shape[1]
    return int(batch.batch["attention_mask"][row, prompt_width:].sum())


def assert_outcome_only(scores: torch.Tensor, length: int, record: RolloutRecord):
    """``scores`` (length,) holds the outcome on the last response token and nothing else."""
    expected = torch.zeros_like(scores)
    expected[length - 1] = record.env_score if record.env_score is not None else 0.0
    torch.testing.assert_close(scores, expected, rtol=0, atol=0)


def test_legacy_validation_sends_no_scoring_request_and_writes_no_turn_reward(model_dir, data_file):
    spy, batch, records = legacy_rollout(model_dir, data_file, validate=True)
    assert spy.agent_requests() and spy.scoring_requests() == []
    for row, record in enumerate(records):
        assert record.validate and record.turn_rewards == [] and record.measured_gains == []
        scores = batch.batch["rm_scores"][row]
        assert_outcome_only(scores[: response_length(batch, row)], response_length(batch, row), record)
        assert torch.count_nonzero(scores[response_length(batch, row):]) == 0
    # Dialogues had feedback to score: the silence is the flag's doing, not an empty batch.
    assert sum(record.eligible_turns for record in records) > 0


def test_legacy_training_rollouts_are_still_scored(model_dir, data_file):
    spy, batch, records = legacy_rollout(model_dir, data_file, validate=False)
    measured = sum(len(record.measured_gains) for record in records)
    assert measured > 0 and len(spy.scoring_requests()) >= measured
    for row, record in enumerate(records):
        assert not record.validate
        for position, value in record.turn_rewards:
            assert float(batch.batch["rm_scores"][row, position]) == pytest.approx(value, abs=1e-6)


def test_legacy_validation_is_scored_when_asked(model_dir, data_file):
    spy, batch, records = legacy_rollout(
        model_dir, data_file, validate=True, overrides=["algorithm.infopo.scoring.validation=true"]
    )
    assert all(record.validate for record in records)
    assert spy.scoring_requests() and any(record.turn_rewards for record in records)


def test_legacy_validation_with_plain_overrides_on_verls_stock_config(model_dir, data_file):
    base = [o for o in BASE_OVERRIDES if "max_tokens_per_turn" not in o]
    config = stock_config(model_dir, [*base, "trainer.use_v1=false",
                                      "+actor_rollout_ref.rollout.agent.agent_loop_manager_class="
                                      "infopo_verl.rollout.output.InfoPOAgentLoopManager"])
    spy = SpyServer(LocalLLMServer(model_dir, max_model_len=MAX_MODEL_LEN, seed=7))
    pipeline = LocalPipeline(config, spy)
    try:
        batch = load_batch(config, [data_file], pipeline.tokenizer)
        batch.meta_info["validate"] = True
        batch = pipeline.rollout(batch)
    finally:
        pipeline.close()
    records = [RolloutRecord.from_batch(batch.non_tensor_batch, row) for row in range(len(batch))]
    assert spy.agent_requests() and spy.scoring_requests() == []
    assert all(record.validate and record.turn_rewards == [] for record in records)
    assert sum(record.eligible_turns for record in records) > 0


# ------------------------------------------------------------------------------------------ v1 trainer


@pytest.fixture(scope="module")
def transfer_queue():
    """A real TransferQueue in this process's Ray. Its controller and storage unit each reserve one Ray CPU, so Ray
    runs here with more logical CPUs than the pipeline tests' two; it is shut down again for the next module."""
    import transfer_queue as tq

    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=6, include_dashboard=False, log_to_driver=False, configure_logging=False)
    tq.init({"backend": {"SimpleStorage": {"num_data_storage_units": 1}}})
    yield tq
    tq.close()
    ray.shutdown()


def v1_rollout(tq, model_dir, data_file, *, validate: bool, overrides=()):
    """What PPOTrainer._validate (v1) does for one batch: put the prompts, let the worker run, read them back."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.utils import tensordict_utils as tu
    from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

    from infopo_verl.rollout.v1 import InfoPOAgentLoopWorkerTQ

    config = compose_config(model_dir, [*BASE_OVERRIDES, *overrides])  # the shipped yaml: v1, InfoPO's manager
    reward_worker = ray.remote(RewardLoopWorker).remote(config)
    try:
        worker = InfoPOAgentLoopWorkerTQ(config, None, None, [reward_worker])
        spy = SpyServer(LocalLLMServer(model_dir, max_model_len=MAX_MODEL_LEN, seed=7))
        worker.llm_client = spy
        dataset = RLHFDataset(data_files=[str(data_file)], tokenizer=worker.tokenizer, config=config.data)
        batch_dict = collate_fn([dataset[index] for index in range(len(dataset))])
        batch_dict["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(dataset))], dtype=object)
        batch = tu.get_tensordict(batch_dict)
        tu.assign_non_tensor_data(batch, "global_steps", 0)
        if validate:
            tu.assign_non_tensor_data(batch, "validate", True)
        partition = "val" if validate else "train"

        async def run():
            await worker.generate_sequences(batch)  # fire and forget, as in verl
            while worker.background_tasks:
                await asyncio.gather(*list(worker.background_tasks))

        asyncio.run(run())
        keys = sorted(key for key in tq.kv_list(partition_id=partition)[partition] if key.count("_") == 2
                      and key.split("_")[0] in set(batch_dict["uid"]))
        data = tq.kv_batch_get(keys=keys, partition_id=partition, select_fields=["rm_scores", "extra_fields"])
    finally:
        ray.kill(reward_worker)
    scores = list(data["rm_scores"].unbind(0))  # ragged: one (response_length,) tensor per dialogue
    records = [RolloutRecord.from_extra_fields(extra) for extra in data.pop("extra_fields").tolist()]
    return spy, scores, records


def test_v1_validation_sends_no_scoring_request_and_writes_no_turn_reward(transfer_queue, model_dir, data_file):
    spy, scores, records = v1_rollout(transfer_queue, model_dir, data_file, validate=True)
    assert len(records) == 4 and spy.agent_requests() and spy.scoring_requests() == []
    for row_scores, record in zip(scores, records, strict=True):
        assert record.validate and record.turn_rewards == []
        # verl's v1 validation logs rm_scores.sum(): here it is exactly the outcome.
        assert_outcome_only(row_scores, row_scores.shape[0], record)
    assert sum(record.eligible_turns for record in records) > 0


def test_v1_training_rollouts_are_still_scored(transfer_queue, model_dir, data_file):
    spy, scores, records = v1_rollout(transfer_queue, model_dir, data_file, validate=False)
    assert len(records) == 4 and spy.scoring_requests()
    assert any(record.turn_rewards for record in records)
    for row_scores, record in zip(scores, records, strict=True):
        assert not record.validate
        expected = torch.zeros_like(row_scores)
        expected[-1] = record.env_score
        for position, value in record.turn_rewards:
            expected[position] += value
        torch.testing.assert_close(row_scores, expected, rtol=0, atol=1e-6)


def test_v1_validation_is_scored_when_asked(transfer_queue, model_dir, data_file):
    spy, scores, records = v1_rollout(
        transfer_queue, model_dir, data_file, validate=True, overrides=["algorithm.infopo.scoring.validation=true"]
    )
    assert all(record.validate for record in records)
    assert spy.scoring_requests() and any(record.turn_rewards for record in records)


def test_a_loop_run_outside_infopos_workers_refuses_to_guess(model_dir, data_file):
    """verl's stock worker never tells the loop the flag: the loop stops, naming the key that fixes it."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    config = compose_config(model_dir, BASE_OVERRIDES)
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    reward_worker = ray.remote(RewardLoopWorker).remote(config)
    try:
        worker = AgentLoopWorker(config, llm_client=None, reward_loop_worker_handles=[reward_worker])
        worker.llm_client = LocalLLMServer(model_dir, max_model_len=MAX_MODEL_LEN, seed=7)
        batch = load_batch(config, [data_file], worker.tokenizer, size=1)
        with pytest.raises(RuntimeError, match="actor_rollout_ref.rollout.agent.agent_loop_manager_class"):
            asyncio.run(worker.generate_sequences(batch))
    finally:
        ray.kill(reward_worker)
