"""``infopo-verl prepare colbench`` on synthetic jsonl of ColBench's format, malformed lines included."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from testkit.colbench import TASKS, task_fields, write_jsonl

from infopo_verl.cli import main
from infopo_verl.data.colbench import TEST_SIZE, TRAIN_SIZE
from infopo_verl.envs.colbench import ANSWER_MARKER, DATA_SOURCE, ColBenchEnv

MALFORMED = [
    "{not json",
    json.dumps({**task_fields(TASKS[0]), "ground_truth": ""}),
    json.dumps({**task_fields(TASKS[0]), "test_cases": ["f(1)"]}),
    json.dumps({key: value for key, value in task_fields(TASKS[0]).items() if key != "hidden_information"}),
    json.dumps({**task_fields(TASKS[0]), "test_cases": {"t1": "f(1)", "t2": 7}}),
]


def test_defaults_are_the_papers_sizes():
    assert (TRAIN_SIZE, TEST_SIZE) == (1000, 100)


def test_cli_converts_names_malformed_lines_and_prints_counts(tmp_path, capsys):
    source = write_jsonl(tmp_path / "backend_tasks", TASKS[:2], TASKS[2:], extra_train_lines=MALFORMED)
    # test_cases stored as JSON text (one way the jsonl may hold them) is read too.
    with (source / "train.jsonl").open("a") as handle:
        handle.write(json.dumps({**task_fields(TASKS[3]), "test_cases": json.dumps(TASKS[3]["test_cases"])}) + "\n")
    out = tmp_path / "out"
    # --source may also be the dataset's root, holding backend_tasks/.
    assert main(["prepare", "colbench", "--source", str(tmp_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    train = source / "train.jsonl"
    assert f"{train}: line 3: not valid JSON" in printed
    assert f"{train}: line 4: field ground_truth" in printed
    assert f"{train}: line 5: field test_cases must be a non-empty mapping" in printed
    assert f"{train}: line 6: field hidden_information" in printed
    assert f"{train}: line 7: field test_cases.t2" in printed
    assert f"colbench/train: 3 rows written from {train} (8 lines, 5 malformed skipped; fewer than the 1000 asked)" \
        in printed
    assert "colbench/test: 3 rows written" in printed

    rows = pq.read_table(out / "train.parquet").to_pylist()
    assert len(rows) == 3
    for row, task in zip(rows, [TASKS[0], TASKS[1], TASKS[3]]):
        assert row["data_source"] == DATA_SOURCE and row["agent_name"] == "infopo_user"
        system, user = row["prompt"]
        assert system["role"] == "system" and ANSWER_MARKER in system["content"]
        assert user == {"role": "user", "content": task["problem_description"]}
        assert row["extra_info"]["infopo"]["env"] == ColBenchEnv.family
        assert json.loads(row["extra_info"]["infopo"]["task"]) == task_fields(task)
        assert task["ground_truth"] not in json.dumps(row["reward_model"])


def test_sizes_keep_the_first_well_formed_rows(tmp_path, capsys):
    source = write_jsonl(tmp_path / "src", TASKS, TASKS)
    out = tmp_path / "out"
    assert main(["prepare", "colbench", "--source", str(source), "--out", str(out), "--train-size", "2",
                 "--test-size", "1"]) == 0
    assert "colbench/train: 2 rows written" in capsys.readouterr().out
    train = pq.read_table(out / "train.parquet").to_pylist()
    assert [json.loads(row["extra_info"]["infopo"]["task"])["problem_description"] for row in train] == \
        [task["problem_description"] for task in TASKS[:2]]
    assert pq.read_metadata(out / "test.parquet").num_rows == 1


@pytest.mark.parametrize("broken", ["missing", "all malformed"])
def test_unusable_sources_are_errors(tmp_path, capsys, broken):
    source = tmp_path / "src"
    if broken == "missing":
        source.mkdir()
        message = "train.jsonl: no such file"
    else:
        write_jsonl(source, [], TASKS[:1], extra_train_lines=MALFORMED[:2])
        message = "no well-formed ColBench row among 2 line(s)"
    assert main(["prepare", "colbench", "--source", str(source), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
