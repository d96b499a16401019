"""The report's readers agree with verl's writers: the file logger's path rule and the v1 dump's reward columns."""

from __future__ import annotations

from tensordict.tensorclass import NonTensorData
from verl.utils.tracking import FileLogger

from infopo_verl.credit import DUMP_KEY, dump_record
from infopo_verl.report.dump import reward_extra_columns
from infopo_verl.report.logs import file_logger_path, parse_run_argument, read_run


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


def test_reward_extra_columns_from_transfer_queue_extra_fields():
    record = {"turn_spans": [[0, 3], [6, 8]], "info_gain": [0.25, None], "agent_texts": ["a?", "b"],
              "feedback_texts": ["c", None], "ended_by": "done", "simulator_failure": None, "family": "clarify"}
    infopo = {"reward_extra_info": {"outcome": 1.0, DUMP_KEY: dump_record(record, "uid-1")}, "infopo": record}
    other = {"reward_extra_info": {"outcome": 0.0, "acc": 1.0}}
    columns = reward_extra_columns([NonTensorData(infopo), other, None])
    assert columns == {"acc": [None, 1.0, None], "outcome": [1.0, 0.0, None],
                       DUMP_KEY: [dump_record(record, "uid-1"), None, None]}
    assert '"uid": "uid-1"' in columns[DUMP_KEY][0] and "family" not in columns[DUMP_KEY][0]
