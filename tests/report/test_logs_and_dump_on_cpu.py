"""The report's readers agree with verl's writers: the file logger's path rule and the v1 dump's reward columns."""

from __future__ import annotations

import dataclasses
import json

from tensordict.tensorclass import NonTensorData
from verl.utils.tracking import FileLogger

from infopo_verl.report.dump import reward_extra_columns
from infopo_verl.report.logs import file_logger_path, parse_run_argument, read_run
from infopo_verl.rollout.record import RolloutRecord
from infopo_verl.report.record import DUMP_KEY, dump_record


def test_file_logger_path_follows_verls_rule(tmp_path, monkeypatch):
    monkeypatch.delenv("VERL_FILE_LOGGER_PATH", raising=False)
    monkeypatch.setenv("VERL_FILE_LOGGER_ROOT", str(tmp_path / "root"))
    logger = FileLogger("proj", "exp-1")
    logger.log({"infopo/outcome/mean": 0.5, "note": "text"}, step=3)
    logger.finish()
    assert file_logger_path("proj", "exp-1") == tmp_path / "root" / "proj" / "exp-1.jsonl"
    assert str(file_logger_path("proj", "exp-1")) == logger.filepath
    run = read_run(logger.filepath, "exp-1")
    assert run.series == {"infopo/outcome/mean": [(3, 0.5)]} and run.non_numeric == 1 and not run.bad_lines

    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(tmp_path / "exact.jsonl"))
    assert str(file_logger_path("proj", "exp-1")) == FileLogger("proj", "exp-1").filepath


def test_run_labels(tmp_path):
    log = tmp_path / "grpo-seed1.jsonl"
    log.write_text("")
    assert parse_run_argument(str(log)) == ("grpo-seed1", log)
    assert parse_run_argument(f"baseline={log}") == ("baseline", log)


def a_record() -> RolloutRecord:
    return RolloutRecord(
        family="clarify", turn_spans=[(0, 3), (6, 8)], feedback_spans=[(4, 5), None], info_gain=[0.25, None],
        turn_rewards=[(3, 0.25)], eligible_turns=1, scoring_skipped=0, env_error_turns=0, scoring_tokens=0,
        scoring_requests=0, scoring_seconds=0.0, step_rewards=[0.0, 1.0], env_steps=2, env_score=1.0, task_metrics={},
        ended_by="done", simulator_failure=None, aborted=False, validate=False, trained=True, empty_turns=0,
        agent_texts=["a?", "b"], feedback_texts=["c", None],
    )


def test_reward_extra_columns_from_transfer_queue_extra_fields():
    record = a_record()
    infopo = {"reward_extra_info": {"outcome": 1.0, DUMP_KEY: dump_record(record, "uid-1")}, "infopo": record}
    other = {"reward_extra_info": {"outcome": 0.0, "acc": 1.0}}
    columns = reward_extra_columns([NonTensorData(infopo), other, None])
    assert columns == {"acc": [None, 1.0, None], "outcome": [1.0, 0.0, None],
                       DUMP_KEY: [dump_record(record, "uid-1"), None, None]}
    assert '"uid": "uid-1"' in columns[DUMP_KEY][0] and "family" not in columns[DUMP_KEY][0]


def _put_like_verls_v1_agent_loop(tokenizer, samples):
    """Samples into a real TransferQueue the way verl's v1 agent loop stores them (``as_dict()`` fields plus the
    dataset columns, key ``{uid}_{session}_{index}``)."""
    import torch
    import transfer_queue as tq
    from verl.utils.tensordict_utils import list_of_dict_to_tensordict

    keys, fields = [], []
    for uid, session, prompt, response, outcome, extra_fields in samples:
        rm_scores = torch.zeros(len(tokenizer.encode(response)))
        rm_scores[-1] = outcome
        keys.append(f"{uid}_{session}_0")
        fields.append({
            "uid": uid,
            "prompts": torch.tensor(tokenizer.encode(prompt)),
            "responses": torch.tensor(tokenizer.encode(response)),
            "rm_scores": rm_scores,
            "reward_model": {"ground_truth": "{}"},
            "extra_fields": extra_fields,
        })
    return tq.kv_batch_put(keys=keys, partition_id="train", fields=list_of_dict_to_tensordict(fields),
                           tags=[{"status": "success"} for _ in keys])


def test_v1_trainer_dump_carries_the_turn_record_with_the_mixin(tmp_path):
    import ray
    import transfer_queue as tq
    from transformers import AutoTokenizer
    from testkit.tiny import tiny_tokenizer_path
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    from infopo_verl.report.dump import TurnRecordDumpMixin

    class Trainer(TurnRecordDumpMixin, PPOTrainerSync):
        pass

    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_path(tmp_path))
    record = dataclasses.replace(
        a_record(), turn_spans=[(0, 2), (6, 7)], info_gain=[0.3, None], agent_texts=["day?", "ANSWER: x"],
        feedback_texts=["monday", None],
    )
    samples = []
    for session, outcome in [(1, 0.0), (0, 1.0)]:  # put out of order: verl sorts by key before dumping
        info = {"outcome": outcome, DUMP_KEY: dump_record(record, "g1")}
        samples.append(("g1", session, "book a table", f"day? monday ANSWER: {session}", outcome,
                        {"infopo": record, "reward_extra_info": info}))
    # TransferQueue's controller and its two storage units each reserve one (logical) Ray CPU.
    if ray.is_initialized():  # an earlier module's Ray has too few logical CPUs for TransferQueue
        ray.shutdown()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        tq.init()
        meta = _put_like_verls_v1_agent_loop(tokenizer, samples)
        for trainer_class, dump in ((PPOTrainerSync, tmp_path / "stock"), (Trainer, tmp_path / "mixin")):
            trainer = object.__new__(trainer_class)  # only the dump code's state: tokenizer, step, executor
            trainer.tokenizer, trainer.global_steps = tokenizer, 7
            trainer._init_dump_executor()
            trainer._log_rollout_data(meta, {}, str(dump))
            trainer._shutdown_dump_executor()
    finally:
        tq.close()
        ray.shutdown()

    stock = [json.loads(line) for line in (tmp_path / "stock" / "7.jsonl").read_text().splitlines()]
    assert set(stock[0]) == {"input", "output", "gts", "score", "step", "uid"}  # verl 0.9.1 dumps no reward column
    lines = [json.loads(line) for line in (tmp_path / "mixin" / "7.jsonl").read_text().splitlines()]
    assert [line["uid"] for line in lines] == ["g1_0_0", "g1_1_0"]
    assert [line["outcome"] for line in lines] == [1.0, 0.0]  # the columns follow verl's sorted order
    assert json.loads(lines[0][DUMP_KEY])["turn_spans"] == [[0, 2], [6, 7]]
