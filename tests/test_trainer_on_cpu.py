"""The per-step metrics reach each trainer's metrics dict, selected by config alone.

- v1: ``trainer.v1.trainer_mode=infopo_sync`` (the shipped yaml) resolves through verl's trainer registry to
  :class:`InfoPOSyncTrainer`, which verl's own constructor then sees as its sync trainer. Its ``_compute_advantage``
  (verl's, then InfoPO's step) runs on clarify rows rolled out through verl's workers and stored per row the way
  the v1 agent loop stores them. TransferQueue does not start on this CPU, so an in-memory key-value store with
  its ``kv_batch_get``/``kv_batch_put`` contract stands in for it (the only stand-in).
- legacy: building InfoPO's manager (as ``RayPPOTrainer.init_workers`` does) makes the legacy trainer's per-step
  ``compute_data_metrics`` carry the ``infopo/*`` metrics, and ``RayPPOTrainer.fit`` really calls that module
  function (and ``compute_advantage``) by name.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from testkit.tiny import tiny_model_path
from transfer_queue import KVBatchMeta
from verl.trainer.ppo import padding_utils, ray_trainer
from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls
from verl.trainer.ppo.v1 import trainer_base
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
from verl.utils.import_utils import load_class_from_fqn
from verl.utils.tensordict_utils import list_of_dict_to_tensordict

from infopo_verl import trainer as infopo_trainer
from infopo_verl.envs.clarify import generate_rows
from infopo_verl.local.pipeline import compose_config, run_dialogues
from infopo_verl.metrics import step_metrics
from infopo_verl.rollout.output import InfoPOAgentLoopManager
from infopo_verl.startup import LEGACY_MANAGER

OVERRIDES = [
    "actor_rollout_ref.rollout.n=3",
    "actor_rollout_ref.rollout.prompt_length=512",
    "data.max_prompt_length=512",
    "actor_rollout_ref.rollout.response_length=160",
    "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=4",
    "algorithm.infopo.max_tokens_per_turn=12",
    "data.train_batch_size=3",
]


@pytest.fixture(scope="module")
def rolled_out(tmp_path_factory):
    model_dir = tiny_model_path(tmp_path_factory.mktemp("tiny"))
    config, batch = run_dialogues(model_dir, generate_rows(3, seed=4, split="train"), OVERRIDES, seed=2)
    return model_dir, config, batch


class KeyValueStore:
    """TransferQueue's ``kv_batch_get`` / ``kv_batch_put`` over a dict: one field dict per key."""

    def __init__(self):
        self.rows: dict[str, dict] = {}
        self.tags: dict[str, dict] = {}

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        wanted = (lambda name: True) if select_fields is None else (lambda name: name in select_fields)
        return list_of_dict_to_tensordict(
            [{name: value for name, value in self.rows[key].items() if wanted(name)} for key in keys]
        )

    def kv_batch_put(self, keys, partition_id, fields, tags=None):
        for index, key in enumerate(keys):
            for field in fields.keys():
                self.rows.setdefault(key, {})[field] = fields[field][index]
            self.tags[key] = {**self.tags.get(key, {}), **(tags[index] if tags else {})}
        return KVBatchMeta(keys=list(keys), tags=[dict(self.tags[key]) for key in keys], partition_id=partition_id)


def stored_as_the_v1_agent_loop_does(store: KeyValueStore, batch) -> KVBatchMeta:
    """Each row under ``{uid}_{session}_0`` with its own response length and its ``extra_fields`` dict."""
    response_length = batch.batch["responses"].shape[1]
    lengths = batch.batch["attention_mask"][:, -response_length:].sum(dim=-1).tolist()
    keys, sessions = [], {}
    for row, uid in enumerate(batch.non_tensor_batch["uid"]):
        session = sessions[uid] = sessions.get(uid, -1) + 1
        key = f"{uid}_{session}_0"
        keys.append(key)
        prompt = batch.batch["prompts"][row][batch.batch["attention_mask"][row, :-response_length].bool()]
        response = batch.batch["responses"][row, : lengths[row]]
        store.rows[key] = {
            "uid": uid,
            "prompts": prompt.clone(),
            "responses": response.clone(),
            "input_ids": torch.cat([prompt, response]),
            "attention_mask": torch.ones(prompt.shape[0] + response.shape[0], dtype=torch.int64),
            "response_mask": batch.batch["response_mask"][row, : lengths[row]].clone(),
            "rm_scores": batch.batch["rm_scores"][row, : lengths[row]].clone(),
            "extra_fields": {"infopo": batch.non_tensor_batch["infopo"][row]},
        }
        store.tags[key] = {"status": "success"}
    return KVBatchMeta(keys=keys, tags=[dict(store.tags[key]) for key in keys], partition_id="train")


def test_v1_infopo_sync_is_verls_sync_trainer_plus_the_metrics(rolled_out, monkeypatch):
    model_dir, config, batch = rolled_out
    job = compose_config(model_dir, OVERRIDES)
    assert job.trainer.v1.trainer_mode == "infopo_sync"  # the shipped yaml selects it
    trainer_cls = get_trainer_cls(job.trainer.v1.trainer_mode)  # as verl's TaskRunnerV1 resolves it
    assert trainer_cls is infopo_trainer.InfoPOSyncTrainer and issubclass(trainer_cls, PPOTrainerSync)
    trainer = trainer_cls(config=job)
    # verl's constructor saw its sync trainer: sync replay buffer, sync mode everywhere it asks.
    assert trainer.trainer_mode == "sync" and job.trainer.v1.trainer_mode == "sync"
    assert type(trainer.replay_buffer) is ReplayBuffer
    trainer._init_tokenizer()  # the one step of verl's init() this test needs; the rest builds GPU workers

    store = KeyValueStore()
    for module in (trainer_base, padding_utils, infopo_trainer):
        monkeypatch.setattr(module, "tq", store)
    real = stored_as_the_v1_agent_loop_does(store, batch)
    # verl's batch balancing pads to a multiple of the data-parallel size with copies of the first row (its
    # extra_fields included), zero mask, zero rewards, tag is_padding.
    meta = padding_utils.upsample_batch_to_divisible_size(real, len(real) + 2, trainer.tokenizer.eos_token_id)
    assert len(meta) == len(real) + 2 and sum(tag.get("is_padding", False) for tag in meta.tags) == 2
    metrics: dict = {}
    trainer._compute_advantage(meta, metrics)

    expected = step_metrics(batch, config.algorithm)
    expected["infopo/excluded_rows"] += 2  # the padding rows, and nothing else about them
    assert set(expected) <= set(metrics)
    for name, value in expected.items():
        if np.isnan(value):
            assert np.isnan(metrics[name]), name
        else:
            assert metrics[name] == pytest.approx(value, rel=1e-6, abs=1e-7), name
    # And verl's own advantage path wrote the same advantages the legacy-style batch carries.
    for key in meta.keys[len(real):]:
        assert not store.rows[key]["advantages"].any()
    for row, key in enumerate(real.keys):
        stored = store.rows[key]["advantages"]
        assert torch.allclose(stored, batch.batch["advantages"][row, : stored.shape[0]], atol=1e-6)


def test_legacy_trainer_metrics_through_infopo_manager(rolled_out, monkeypatch):
    model_dir, config, batch = rolled_out
    monkeypatch.setattr(ray_trainer, "compute_data_metrics", ray_trainer.compute_data_metrics)  # restored after
    plain = ray_trainer.compute_data_metrics(batch=batch, use_critic=False)
    assert not any(name.startswith("infopo/") for name in plain)

    legacy = compose_config(model_dir, [*OVERRIDES, "trainer.use_v1=false", f"{LEGACY_MANAGER_KEY}={LEGACY_MANAGER}"])
    manager_cls = load_class_from_fqn(OmegaConf.select(legacy, LEGACY_MANAGER_KEY), "AgentLoopManager")
    assert manager_cls is InfoPOAgentLoopManager
    manager_cls(config=legacy, llm_client=None)  # as RayPPOTrainer.init_workers builds it, before the first step
    manager_cls(config=legacy, llm_client=None)  # idempotent: a second manager does not stack a second hook

    logged = ray_trainer.compute_data_metrics(batch=batch, use_critic=False)
    expected = step_metrics(batch, legacy.algorithm)
    assert {name: logged[name] for name in plain} == plain  # verl's own metrics untouched
    assert set(logged) == set(plain) | set(expected)
    for name, value in expected.items():
        assert (np.isnan(value) and np.isnan(logged[name])) or logged[name] == value, name
    # The hook sits where the legacy fit loop looks: it calls both module functions by their global names.
    names = ray_trainer.RayPPOTrainer.fit.__code__.co_names
    assert "compute_data_metrics" in names and "compute_advantage" in names


LEGACY_MANAGER_KEY = "actor_rollout_ref.rollout.agent.agent_loop_manager_class"


def test_plain_override_on_verls_stock_config_selects_the_metrics_trainer(rolled_out):
    """The documented plain override (the key exists in verl's ppo_trainer.yaml, so no ``+``)."""
    from hydra import compose, initialize_config_module

    model_dir, _, _ = rolled_out
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        stock = compose(
            config_name="ppo_trainer",
            overrides=[
                f"actor_rollout_ref.model.path={model_dir}",
                "algorithm.adv_estimator=infopo",
                "reward.reward_manager.name=infopo",
                "actor_rollout_ref.rollout.agent.default_agent_loop=infopo_user",
                "actor_rollout_ref.rollout.n=2",
                "trainer.v1.trainer_mode=infopo_sync",
                # The v1 manager that keeps validation outcome-only (documented alongside; refused without it).
                "+actor_rollout_ref.rollout.agent.agent_loop_manager_class=infopo_verl.rollout.v1.InfoPOAgentLoopManagerTQ",
            ],
        )
    trainer = get_trainer_cls(stock.trainer.v1.trainer_mode)(config=stock)
    assert isinstance(trainer, infopo_trainer.InfoPOSyncTrainer) and trainer.trainer_mode == "sync"
