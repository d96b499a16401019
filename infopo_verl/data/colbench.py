"""``infopo-verl prepare colbench --source DIR --out DIR``: ColBench backend tasks as ``infopo_user`` parquet rows.

ColBench's data (Hugging Face ``facebook/collaborative_agent_bench``, ``backend_tasks/{train,test}.jsonl``) is
CC-BY-NC: this project never downloads or ships it; the user downloads it and gives its folder (``DIR`` holding
``train.jsonl`` and ``test.jsonl``, or its parent holding ``backend_tasks/``).

Each line is one task with ``problem_description``, ``hidden_information``, ``ground_truth`` (text) and
``test_cases`` (a mapping name -> Python call expression, or its JSON text). The first ``--train-size`` /
``--test-size`` well-formed rows of each file are written (1000 / 100 by default, the sizes the paper's
preprocessing keeps) to ``OUT/train.parquet`` and ``OUT/test.parquet``:

- ``prompt``: our system prompt (the protocol and the ``I WANT TO ANSWER:`` marker,
  :func:`infopo_verl.envs.colbench.system_prompt`), then the problem description as the user's first message;
- ``data_source = "colbench_backend"``, ``agent_name = "infopo_user"``;
- ``extra_info.infopo = {"env": "colbench", "task": <JSON text of the four fields>}``.

A malformed line (not JSON, a field missing or of the wrong type) is named by file, line and field, skipped and
counted; the counts per file are printed. A file without a single well-formed row is an error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["convert_colbench", "convert_task", "add_cli", "TRAIN_SIZE", "TEST_SIZE"]

TRAIN_SIZE = 1000
"""Training tasks kept (the paper's ColBench preprocessing)."""
TEST_SIZE = 100
"""Held-out tasks kept (the paper's ColBench preprocessing)."""
TEXT_FIELDS = ("problem_description", "hidden_information", "ground_truth")


def convert_task(record: Any, where: str) -> dict[str, Any]:
    """The four task fields of one jsonl record, checked; raises ValueError naming ``where`` and the field."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: the line is not a JSON object")
    task: dict[str, Any] = {}
    for field in TEXT_FIELDS:
        value = record.get(field)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: field {field} must be non-empty text, got {value!r:.60}")
        task[field] = value
    tests = record.get("test_cases")
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError:
            raise ValueError(f"{where}: field test_cases is text but not JSON") from None
    if not isinstance(tests, dict) or not tests:
        raise ValueError(f"{where}: field test_cases must be a non-empty mapping of name -> call, got {tests!r:.60}")
    for name, call in tests.items():
        if not isinstance(call, str) or not call.strip():
            raise ValueError(f"{where}: field test_cases.{name} must be a Python call expression, got {call!r:.60}")
    task["test_cases"] = dict(tests)
    return task


def _row(task: dict[str, Any], split: str, index: int) -> dict[str, Any]:
    from infopo_verl.data.prepare import AGENT_NAME
    from infopo_verl.envs.colbench import DATA_SOURCE, ColBenchEnv, system_prompt

    return {
        "data_source": DATA_SOURCE,
        "prompt": [{"role": "system", "content": system_prompt()},
                   {"role": "user", "content": task["problem_description"]}],
        "ability": "coding",
        # The outcome is the environment's score; the reference code stays inside extra_info.infopo.task only.
        "reward_model": {"style": "sandbox", "ground_truth": ""},
        "agent_name": AGENT_NAME,
        "extra_info": {"index": index, "split": split,
                       "infopo": {"env": ColBenchEnv.family, "task": json.dumps(task, ensure_ascii=False)}},
    }


def _source_dir(source: Path) -> Path:
    if not (source / "train.jsonl").exists() and (source / "backend_tasks" / "train.jsonl").exists():
        return source / "backend_tasks"
    return source


def convert_colbench(source: Path, out: Path, *, train_size: int = TRAIN_SIZE, test_size: int = TEST_SIZE,
                     echo: Callable[[str], None] = print) -> dict[str, dict[str, int]]:
    """Convert ``source/{train,test}.jsonl`` into ``out/{train,test}.parquet``.

    Returns ``{split: {"lines": n, "malformed": n, "written": n}}``. Raises ValueError for a missing file or a file
    without any well-formed row.
    """
    from infopo_verl.data.prepare import PrepareError, _write_parquet

    source = _source_dir(Path(source))
    report = {}
    for split, size in (("train", train_size), ("test", test_size)):
        path = source / f"{split}.jsonl"
        if not path.is_file():
            raise PrepareError(f"{path}: no such file; --source must hold ColBench's train.jsonl and test.jsonl "
                               f"(backend_tasks/ of facebook/collaborative_agent_bench)")
        rows, lines, malformed = [], 0, 0
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                lines += 1
                if len(rows) >= size:
                    continue  # counted, not converted: beyond the requested size
                where = f"{path}: line {number}"
                try:
                    task = convert_task(json.loads(line), where)
                except json.JSONDecodeError as error:
                    malformed += 1
                    echo(f"  skipped {where}: not valid JSON ({error.msg})")
                    continue
                except ValueError as error:
                    malformed += 1
                    echo(f"  skipped {error}")
                    continue
                rows.append(_row(task, split, len(rows)))
        if not rows:
            raise PrepareError(f"{path}: no well-formed ColBench row among {lines} line(s)")
        _write_parquet(rows, Path(out) / f"{split}.parquet")
        report[split] = {"lines": lines, "malformed": malformed, "written": len(rows)}
        short = f"; fewer than the {size} asked" if len(rows) < size else ""
        echo(f"colbench/{split}: {len(rows)} rows written from {path} ({lines} lines, {malformed} malformed "
             f"skipped{short})")
    return report


def _run(args: argparse.Namespace) -> int:
    from infopo_verl.data.prepare import PrepareError

    for name in ("train_size", "test_size"):
        if getattr(args, name) < 1:
            print(f"infopo-verl prepare: error: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    try:
        convert_colbench(Path(args.source), Path(args.out), train_size=args.train_size, test_size=args.test_size)
    except PrepareError as error:
        print(f"infopo-verl prepare: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


def add_cli(kinds: Any) -> None:
    """Add ``colbench`` to ``infopo-verl prepare``'s subcommands."""
    parser = kinds.add_parser("colbench", help="convert ColBench's backend tasks (you download them: CC-BY-NC)")
    parser.add_argument("--source", required=True,
                        help="folder with train.jsonl and test.jsonl (backend_tasks/ of the Hugging Face dataset "
                             "facebook/collaborative_agent_bench, CC-BY-NC, downloaded by you)")
    parser.add_argument("--out", default="data/colbench", help="output folder (default: %(default)s)")
    parser.add_argument("--train-size", type=int, default=TRAIN_SIZE,
                        help="training tasks kept, the first well-formed ones (default: %(default)s, the paper's)")
    parser.add_argument("--test-size", type=int, default=TEST_SIZE,
                        help="held-out tasks kept, the first well-formed ones (default: %(default)s, the paper's)")
    parser.set_defaults(func=_run)
