"""Which curves the report draws and the summary table: final and best value per run, and the first step at which
a run's outcome exceeds the baseline's.

Metric names are contracts: the ``infopo/*`` names are the plugin's per-step metrics (``docs/metrics.md``);
``num_turns/mean``, ``response_length/mean`` and ``val-core/<data_source>/<reward|acc>/mean@<n>`` are verl's own
(``verl.trainer.ppo.metric_utils.compute_data_metrics`` and the trainers' ``_val_metrics_update``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Literal

from infopo_verl.report.logs import Run

OUTCOME = "infopo/outcome/mean"
INFO_SHARE = "infopo/info_share"
INFO_GAIN = "infopo/info_gain/mean"
GATE = "infopo/gate/mean"
TIED = "infopo/tied_group_fraction"
TURNS = "num_turns/mean"
RESPONSE_LENGTH = "response_length/mean"
INFO_GAIN_TURN = "infopo/info_gain/turn_"
INFO_ADVANTAGE_TURN = "infopo/info_advantage/turn_"
VALIDATION = re.compile(r"^val-core/(?P<source>.+)/(?P<variable>reward|acc)/mean@(?P<n>\d+)$")
"""verl's headline validation metric: the mean reward (or ``acc``) over the n samples of each prompt."""


@dataclasses.dataclass(frozen=True)
class Curve:
    key: str
    title: str
    better: Literal["max", "min"] | None
    """Which way is better, for the table's "best" column; None: no direction (best is left empty)."""
    compare: bool = False
    """Whether the table says when each run first exceeds the baseline on this curve."""


# Direction choices are ours: a higher outcome, validation reward and raw information gain are the improvements the
# paper reports; fewer tied groups means more outcome signal. The share, the gate, turns and length have no better
# direction (the paper reads their trend, not their level).
FIXED_CURVES = (
    Curve(OUTCOME, "train outcome R (infopo/outcome/mean)", "max", compare=True),
    Curve(INFO_SHARE, "info share of the advantage", None),
    Curve(INFO_GAIN, "raw information gain r_t", "max"),
    Curve(GATE, "gate", None),
    Curve(TIED, "tied group fraction", "min"),
    Curve(TURNS, "turns per dialogue", None),
    Curve(RESPONSE_LENGTH, "response length (tokens)", None),
)


def validation_keys(run: Run) -> list[str]:
    """The run's ``val-core/<source>/<reward|acc>/mean@<n>`` keys, the largest n per source and variable."""
    best: dict[tuple[str, str], tuple[int, str]] = {}
    for name in run.names("val-core/"):
        match = VALIDATION.match(name)
        if match:
            slot = (match["source"], match["variable"])
            best[slot] = max(best.get(slot, (-1, "")), (int(match["n"]), name))
    return sorted(name for _, name in best.values())


def curves(runs: Sequence[Run]) -> list[Curve]:
    """Every curve of the table: the fixed ones, then each validation key any run has."""
    validation = sorted({key for run in runs for key in validation_keys(run)})
    extra = [Curve(key, f"validation {VALIDATION.match(key)['source']} ({key})", "max", compare=True) for key in validation]
    return [FIXED_CURVES[0], *extra, *FIXED_CURVES[1:]]


def turn_keys(run: Run, prefix: str) -> list[str]:
    """``<prefix>0``, ``<prefix>1``, ... present in the run, in turn order."""
    found = [name for name in run.names(prefix) if name[len(prefix):].isdigit()]
    return sorted(found, key=lambda name: int(name[len(prefix):]))


@dataclasses.dataclass(frozen=True)
class Row:
    curve: Curve
    run: str
    final_step: int
    final: float
    best_step: int | None
    best: float | None
    first_above_baseline: int | None
    """First step (common to both runs) at which this run's value exceeds the baseline's; None: never."""
    compared: bool
    """False when there is nothing to compare with (no baseline, or this run is the baseline)."""


def first_step_above(series: Sequence[tuple[int, float]], baseline: Sequence[tuple[int, float]]) -> int | None:
    reference = dict(baseline)
    for step, value in series:
        if step in reference and value > reference[step]:
            return step
    return None


def choose_baseline(runs: Sequence[Run], label: str | None) -> Run | None:
    """``label`` if given, else the first run without ``infopo/info_gain/mean`` (a GRPO run logs none)."""
    if label is not None:
        for run in runs:
            if run.label == label:
                return run
        raise ValueError(f"--baseline {label!r} is not one of the runs: {[run.label for run in runs]}")
    return next((run for run in runs if not run.has(INFO_GAIN)), None)


def table(runs: Sequence[Run], baseline: Run | None) -> list[Row]:
    rows = []
    for curve in curves(runs):
        for run in runs:
            series = run.series.get(curve.key)
            if not series:
                continue
            final_step, final = series[-1]
            best_step = best = None
            if curve.better is not None:
                sign = 1.0 if curve.better == "max" else -1.0
                # Among equal values the earliest step: when that level was first reached.
                best_step, best = max(series, key=lambda point: (sign * point[1], -point[0]))
            compared = curve.compare and baseline is not None and run is not baseline and baseline.has(curve.key)
            first = first_step_above(series, baseline.series[curve.key]) if compared else None
            rows.append(Row(curve, run.label, final_step, final, best_step, best, first, compared))
    return rows
