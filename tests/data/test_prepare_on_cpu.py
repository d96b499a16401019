"""``infopo-verl prepare``: real UserRL data converted, counts as the paper's mixes, malformed input named precisely."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infopo_verl.cli import main
from infopo_verl.data.prepare import EXPECTED_MIXES, PrepareError, convert_userrl
from infopo_verl.envs.registry import FAMILIES
from infopo_verl.envs.userrl.common import INTERACT_TOOL

USERRL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "userrl"
pytestmark = pytest.mark.skipif(not USERRL.is_dir(), reason=f"UserRL data folder {USERRL} is absent")
MIXES = ["alltrain_multiturn", "alltest_multiturn"]


def read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_cli_converts_every_dataset_and_prints_counts_per_family(tmp_path, capsys):
    out = tmp_path / "userrl"
    assert main(["prepare", "userrl", "--source", str(USERRL), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert ("alltrain_multiturn/train: 2426 rows (travel 925, tau 500, turtle 423, persuade 378, function 200)"
            in printed)
    assert "alltest_multiturn/test: 597 rows" in printed
    assert printed.count("matches the paper's mix") == 2
    for source in sorted((USERRL / "data").glob("*/*.parquet")):
        converted = out / source.parent.name / source.name
        assert converted.is_file() and pq.read_metadata(converted).num_rows == pq.read_metadata(source).num_rows


def test_mixes_keep_userrl_rows_and_add_what_the_agent_loop_needs(tmp_path):
    report = convert_userrl(USERRL, tmp_path, datasets=MIXES, progress=False, echo=lambda line: None)
    for name, expected in EXPECTED_MIXES.items():
        assert dict(report[name]["families"]) == expected
    for dataset, split in (("alltrain_multiturn", "train"), ("alltest_multiturn", "test")):
        originals = read(USERRL / "data" / dataset / f"{split}.parquet")
        converted = read(tmp_path / dataset / f"{split}.parquet")
        assert len(converted) == len(originals)
        for original, row in zip(originals, converted):
            assert row["prompt"] == original["prompt"]  # UserRL's system prompt and action format, unchanged
            assert row["data_source"] == original["data_source"] and row["reward_model"] == original["reward_model"]
            assert row["agent_name"] == "infopo_user"
            infopo = row["extra_info"]["infopo"]
            assert infopo["env"] in FAMILIES and infopo["tools"] == [INTERACT_TOOL]
            assert isinstance(json.loads(infopo["task"]), dict)
            assert row["extra_info"]["tools_kwargs"] == original["extra_info"]["tools_kwargs"]


def test_task_fields_come_from_the_gyms_json_files(tmp_path):
    convert_userrl(USERRL, tmp_path, datasets=["alltest_multiturn"], progress=False, echo=lambda line: None)
    tasks = {}
    for row in read(tmp_path / "alltest_multiturn" / "test.parquet"):
        tasks.setdefault(row["extra_info"]["infopo"]["env"], json.loads(row["extra_info"]["infopo"]["task"]))
    functions = json.loads((USERRL / "gyms/FunctionGym/functiongym/data/functions.json").read_text())
    assert {"rule", "test_case", "expected_result"} <= tasks["function"].keys()
    assert any(f["id"] == tasks["function"]["id"] and f["rule"] == tasks["function"]["rule"] for f in functions)
    assert sum(item["weight"] for item in tasks["turtle"]["evaluation"]) == pytest.approx(1.0)
    assert tasks["intention"]["missing_details"][0]["importance"] in ("1", "2", "3")
    assert tasks["travel"]["best_options"] and tasks["travel"]["aspects"]
    assert tasks["search"]["answer"] and tasks["tau"]["instruction"]


def test_exclude_family_drops_counts_and_reports(tmp_path, capsys):
    assert main(["prepare", "userrl", "--source", str(USERRL), "--out", str(tmp_path), "--datasets",
                 "alltrain_multiturn", "--exclude-family", "tau", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "alltrain_multiturn/train: 1926 rows" in printed and "dropped by --exclude-family: tau 500" in printed
    assert pq.read_metadata(tmp_path / "alltrain_multiturn" / "train.parquet").num_rows == 1926


def copy_source(tmp_path: Path, dataset: str) -> Path:
    """A writable copy of the data root holding one dataset (the gyms' JSON files are copied as they are)."""
    root = tmp_path / "source"
    shutil.copytree(USERRL / "gyms", root / "gyms")
    shutil.copytree(USERRL / "data" / dataset, root / "data" / dataset)
    return root


def rewrite(path: Path, change) -> None:
    rows = read(path)
    change(rows)
    pq.write_table(pa.Table.from_pylist(rows), path)


@pytest.mark.parametrize(
    "change, field",
    [
        (lambda rows: rows[3].update(data_source="interact_unknown"), "row 3: field data_source: unknown"),
        (lambda rows: rows[5].update(prompt=[]), "row 5: field prompt must be a non-empty list"),
        (lambda rows: rows[7]["prompt"][0].update(content=""), r"row 7: field prompt\[0\]\.content"),
        (lambda rows: rows[2].update(extra_info={"index": 2}),
         "row 2: field extra_info.tools_kwargs.interact_with_env.create_kwargs is missing"),
        (lambda rows: rows[4]["extra_info"]["tools_kwargs"]["interact_with_env"]["create_kwargs"].update(id="func-x"),
         r"row 4: field extra_info\.tools_kwargs\.interact_with_env\.create_kwargs\.id: 'func-x' is not in .*functions\.json"),
    ],
)
def test_a_malformed_row_names_the_file_the_row_and_the_field(tmp_path, change, field):
    source = copy_source(tmp_path, "function_multiturn")
    parquet = source / "data" / "function_multiturn" / "test.parquet"
    rewrite(parquet, change)
    with pytest.raises(PrepareError, match=f"^{parquet}: {field}"):
        convert_userrl(source, tmp_path / "out", progress=False, echo=lambda line: None)


def test_malformed_files_are_named(tmp_path, capsys):
    source = copy_source(tmp_path, "function_multiturn")
    parquet = source / "data" / "function_multiturn" / "test.parquet"
    parquet.write_bytes(b"not parquet")
    with pytest.raises(PrepareError, match=f"^{parquet}: not a readable parquet file"):
        convert_userrl(source, tmp_path / "out", progress=False, echo=lambda line: None)
    parquet.unlink()
    functions = source / "gyms/FunctionGym/functiongym/data/functions.json"
    functions.write_text("[{")
    with pytest.raises(PrepareError, match=f"^{functions}: not a readable JSON file"):
        convert_userrl(source, tmp_path / "out", progress=False, echo=lambda line: None)
    functions.unlink()
    with pytest.raises(PrepareError, match=f"^{functions}: task file of the function rows is missing"):
        convert_userrl(source, tmp_path / "out", progress=False, echo=lambda line: None)
    # through the command: an error line and exit status 2, no traceback
    assert main(["prepare", "userrl", "--source", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["prepare", "userrl", "--source", str(USERRL), "--out", str(tmp_path / "o"),
                 "--datasets", "nope"]) == 2
    assert main(["prepare", "userrl", "--source", str(USERRL), "--out", str(tmp_path / "o"),
                 "--exclude-family", "chess"]) == 2
    assert "--exclude-family: unknown chess" in capsys.readouterr().err


def test_synthetic_writes_the_builtin_clarify_task(tmp_path, capsys):
    out = tmp_path / "synthetic"
    assert main(["prepare", "synthetic", "--out", str(out), "--train", "6", "--test", "3", "--seed", "7"]) == 0
    assert "synthetic/train: 6 rows (clarify 6)" in capsys.readouterr().out
    train, test = read(out / "train.parquet"), read(out / "test.parquet")
    assert len(train) == 6 and len(test) == 3
    assert {row["extra_info"]["infopo"]["env"] for row in train + test} == {"clarify"}
    main(["prepare", "synthetic", "--out", str(tmp_path / "again"), "--train", "6", "--test", "3", "--seed", "7"])
    assert read(tmp_path / "again" / "train.parquet") == train


def test_paper_mixes_land_at_the_top_of_out_and_excluded_families_are_counted(tmp_path, capsys):
    """The recipes read OUT/train.parquet and OUT/test.parquet; Tau (not runnable here) is dropped with counts."""
    out = tmp_path / "userrl"
    args = ["prepare", "userrl", "--source", str(USERRL), "--out", str(out), "--no-progress", "--exclude-family", "tau"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "alltrain_multiturn/train: 1926 rows" in printed and "dropped by --exclude-family: tau 500" in printed
    assert "tau_multiturn/train: 0 rows" in printed and "no file written" in printed
    train, test = read(out / "train.parquet"), read(out / "test.parquet")
    assert len(train) == 1926 and len(test) == 515
    assert train == read(out / "alltrain_multiturn" / "train.parquet")
    assert not any(json.loads(row["extra_info"]["infopo"]["task"]) is None for row in train[:5])
    assert {row["extra_info"]["infopo"]["env"] for row in train} == {"travel", "turtle", "persuade", "function"}
