"""Reading what verl's ``file`` logger wrote: one JSON line per step, ``{"step": s, "data": {name: value}}``.

verl's ``FileLogger`` (``verl.utils.tracking``, selected by ``trainer.logger=[..., 'file']``) writes to
``$VERL_FILE_LOGGER_PATH`` when set, else to ``$VERL_FILE_LOGGER_ROOT/<project_name>/<experiment_name>.jsonl``
(root default: the working directory). :func:`file_logger_path` follows the same rule, so a script can find a run's
log from its config.

A line that is not such an object (a run killed mid-write, a hand edit) is skipped and recorded in
:attr:`Run.bad_lines` with its file and line number; a metric value that is not a number is counted in
:attr:`Run.non_numeric`. Nothing is dropped without a count.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class BadLine:
    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclasses.dataclass
class Run:
    """One run's metrics: ``series[name]`` is a list of ``(step, value)`` in step order."""

    label: str
    path: str
    series: dict[str, list[tuple[int, float]]]
    steps: int
    """Number of step lines read."""
    bad_lines: list[BadLine]
    non_numeric: int
    """Metric values that were not finite numbers (null, strings, NaN), left out of the series."""
    repeated_steps: int
    """Step numbers that appeared on more than one line (the later line wins, as a resumed run overwrites)."""

    def has(self, name: str) -> bool:
        return bool(self.series.get(name))

    def names(self, prefix: str) -> list[str]:
        return sorted(name for name in self.series if name.startswith(prefix) and self.series[name])


def file_logger_path(project_name: str, experiment_name: str, environ: dict[str, str] | None = None) -> Path:
    """Where verl 0.9.1's ``FileLogger`` writes for this project and experiment (same rule as its ``__init__``)."""
    environ = os.environ if environ is None else environ
    if environ.get("VERL_FILE_LOGGER_PATH"):
        return Path(environ["VERL_FILE_LOGGER_PATH"])
    root = Path(os.path.expanduser(environ.get("VERL_FILE_LOGGER_ROOT", ".")))
    return root / project_name / f"{experiment_name}.jsonl"


def parse_run_argument(argument: str) -> tuple[str, Path]:
    """``label=path`` or ``path`` (labelled by the file name without ``.jsonl``)."""
    label, separator, path = argument.partition("=")
    if separator and label and not Path(argument).exists():
        return label, Path(path)
    path = Path(argument)
    return (path.stem if path.suffix == ".jsonl" else path.name), path


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def json_lines(path: Path, bad_lines: list[BadLine]) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank JSON line of ``path``; other lines go to ``bad_lines``."""
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as error:
                bad_lines.append(BadLine(str(path), number, f"not JSON ({error.msg} at column {error.colno})"))


def read_run(path: str | os.PathLike, label: str) -> Run:
    """Read one file-logger JSONL file. Raises ``FileNotFoundError`` naming the path when it does not exist."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"run {label!r}: no log file at {path} (verl's file logger writes "
                                "$VERL_FILE_LOGGER_PATH or $VERL_FILE_LOGGER_ROOT/<project>/<experiment>.jsonl)")
    by_step: dict[int, dict[str, float]] = {}
    bad_lines: list[BadLine] = []
    non_numeric = repeated = lines = 0
    for number, entry in json_lines(path, bad_lines):
        step = entry.get("step") if isinstance(entry, dict) else None
        data = entry.get("data") if isinstance(entry, dict) else None
        if isinstance(step, bool) or not isinstance(step, int) or not isinstance(data, dict):
            bad_lines.append(BadLine(str(path), number, 'not {"step": <int>, "data": {...}}'))
            continue
        lines += 1
        values = {}
        for name, raw in data.items():
            value = _number(raw)
            if value is None:
                non_numeric += 1
            else:
                values[name] = value
        if step in by_step:
            repeated += 1
        by_step[step] = values
    series: dict[str, list[tuple[int, float]]] = {}
    for step in sorted(by_step):
        for name, value in by_step[step].items():
            series.setdefault(name, []).append((step, value))
    return Run(label, str(path), series, lines, bad_lines, non_numeric, repeated)
