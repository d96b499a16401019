"""verl's own rollout-reward-advantage path on a CPU, with an in-process model standing in for vLLM.

``main_ppo`` needs GPUs (resource pools, vLLM servers), but every piece InfoPO plugs into runs on a CPU: this
module wires them exactly as the trainer does (SPEC section 3) and is shared by the demo, the end-to-end tests and
the benchmarks:

1. the job config is composed by Hydra from the plugin's ``infopo_trainer.yaml`` (verl's ``ppo_trainer`` plus
   InfoPO), with overrides;
2. batches come from verl's ``RLHFDataset`` over parquet rows, repeated ``rollout.n`` times with a ``uid`` per
   prompt, as the trainer does;
3. verl's ``AgentLoopWorker.generate_sequences`` runs the ``infopo_user`` loop, its ``llm_client`` replaced by
   :class:`~infopo_verl.local.server.LocalLLMServer` (the only stand-in). The worker is the plugin's
   legacy-trainer subclass, which tells the loop the batch's ``meta_info["validate"]`` (validation rollouts are
   not scored) and whose ``_postprocess`` writes the turn values into the padded ``rm_scores`` (the v1
   trainer does the same through ``InfoPOAgentLoopOutput.as_dict`` on TransferQueue, which needs no CPU stand-in
   but a running TransferQueue; the tests check that path on its own);
4. verl's ``RewardLoopWorker`` runs as a real Ray actor with the plugin's reward manager (the actor only learns
   about the plugin through ``import verl``, as in training);
5. verl's ``compute_advantage`` runs the selected estimator.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
from hydra import compose, initialize_config_module
from omegaconf import DictConfig
from verl import DataProto
from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
from verl.trainer.ppo.ray_trainer import compute_advantage
from verl.utils.dataset.rl_dataset import RLHFDataset, collate_fn

from infopo_verl.local.server import LocalLLMServer
from infopo_verl.rollout.output import InfoPOAgentLoopWorker

CONFIG_MODULE = "infopo_verl.hydra_configs"
CONFIG_NAME = "infopo_trainer"


def compose_config(model_path: str | Path, overrides: Sequence[str] = ()) -> DictConfig:
    """The job config ``main_ppo`` would see for ``infopo_trainer.yaml`` + ``overrides``, set up for a CPU run."""
    cpu_defaults = [
        f"actor_rollout_ref.model.path={model_path}",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "trainer.n_gpus_per_node=0",
        "trainer.device=cpu",
    ]
    with initialize_config_module(config_module=CONFIG_MODULE, version_base=None):
        return compose(config_name=CONFIG_NAME, overrides=[*cpu_defaults, *overrides])


def load_batch(config: DictConfig, parquet_files: Sequence[str | Path], tokenizer, size: int | None = None) -> DataProto:
    """Rows of ``parquet_files`` through verl's ``RLHFDataset``, each repeated ``rollout.n`` times under one uid."""
    dataset = RLHFDataset(data_files=[str(path) for path in parquet_files], tokenizer=tokenizer, config=config.data)
    count = len(dataset) if size is None else min(size, len(dataset))
    batch = DataProto.from_single_dict(collate_fn([dataset[index] for index in range(count)]))
    batch.non_tensor_batch["uid"] = np.array([str(uuid.uuid4()) for _ in range(len(batch))], dtype=object)
    # The trainer hands the agent loop only non-tensor columns (it pops input_ids & co. before rollout).
    batch = DataProto(non_tensor_batch=batch.non_tensor_batch, meta_info=batch.meta_info)
    return batch.repeat(repeat_times=config.actor_rollout_ref.rollout.n, interleave=True)


class LocalPipeline:
    """Rollout, reward and advantage for a batch, through verl's classes, on a CPU."""

    def __init__(self, config: DictConfig, server: Any):
        self.config = config
        if not ray.is_initialized():
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        self.reward_worker = ray.remote(RewardLoopWorker).remote(config)
        self.worker = InfoPOAgentLoopWorker(config, llm_client=None, reward_loop_worker_handles=[self.reward_worker])
        self.worker.llm_client = server
        self.tokenizer = self.worker.tokenizer

    def rollout(self, batch: DataProto) -> DataProto:
        """``AgentLoopWorker.generate_sequences``: padded batch with ``rm_scores`` (turn values included)."""
        output = asyncio.run(self.worker.generate_sequences(batch))
        # The trainer unions the rollout with its input batch (uid, data_source, extra_info, ...): do the same.
        for key, values in batch.non_tensor_batch.items():
            output.non_tensor_batch.setdefault(key, values)
        return output

    def advantages(self, batch: DataProto) -> DataProto:
        """verl's ``compute_advantage`` on ``rm_scores`` with the configured estimator (no KL in reward)."""
        batch.batch["token_level_scores"] = batch.batch["rm_scores"]
        batch.batch["token_level_rewards"] = batch.batch["rm_scores"]
        algorithm = self.config.algorithm
        return compute_advantage(
            batch,
            adv_estimator=algorithm.adv_estimator,
            num_repeat=self.config.actor_rollout_ref.rollout.n,
            norm_adv_by_std_in_grpo=algorithm.get("norm_adv_by_std_in_grpo", True),
            config=algorithm,
        )

    def close(self) -> None:
        ray.kill(self.reward_worker)


def run_dialogues(
    model_path: str | Path, rows: Sequence[dict[str, Any]], overrides: Sequence[str] = (), *, seed: int = 0
) -> tuple[DictConfig, DataProto]:
    """Roll out ``rows`` (verl dataset rows) end to end on the CPU: config, rollout, reward, advantages.

    Returns the composed config and the batch after ``compute_advantage``. The server's context length is the
    rollout's ``prompt_length + response_length`` unless ``rollout.max_model_len`` is set.
    """
    config = compose_config(model_path, overrides)
    rollout = config.actor_rollout_ref.rollout
    max_model_len = int(rollout.get("max_model_len") or rollout.prompt_length + rollout.response_length)
    with tempfile.TemporaryDirectory() as scratch:
        data_file = Path(scratch) / "rows.parquet"
        pd.DataFrame(list(rows)).to_parquet(data_file)
        pipeline = LocalPipeline(config, LocalLLMServer(model_path, max_model_len=max_model_len, seed=seed))
        try:
            batch = pipeline.advantages(pipeline.rollout(load_batch(config, [data_file], pipeline.tokenizer)))
        finally:
            pipeline.close()
    return config, batch
