"""The report's PNG figures, drawn with matplotlib's object API (no pyplot state, Agg canvas, no display).

matplotlib is the ``report`` extra (``pip install 'infopo-verl[report]'``), never imported on the training path:
:func:`require_matplotlib` imports it when a figure is drawn and says how to install it otherwise.

Every figure is ``FIGURE_INCHES`` at ``DPI``: ``FIGURE_PIXELS`` exactly (no tight bounding box, which would make
the size depend on the labels), so a page can lay them out and a test can check them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

from infopo_verl.report import summary
from infopo_verl.report.logs import Run

FIGURE_INCHES = (10.0, 4.5)
DPI = 100
FIGURE_PIXELS = (1000, 450)
"""(width, height) of every PNG the report writes."""
INSTALL_HINT = "the report draws its figures with matplotlib: pip install 'infopo-verl[report]' (or pip install matplotlib)"


def require_matplotlib():
    try:
        import matplotlib
    except ImportError as error:
        raise SystemExit(f"infopo-verl report: {INSTALL_HINT}") from error
    return matplotlib


@dataclasses.dataclass(frozen=True)
class Written:
    file: str
    """File name, relative to the report directory."""
    title: str
    caption: str


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "run"


def _figure(panels: int):
    require_matplotlib()
    from matplotlib.figure import Figure

    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    return figure, list(axes)


def _save(figure, directory: Path, file: str) -> None:
    figure.savefig(directory / file, dpi=DPI, format="png")


def _lines(axis, runs: Sequence[Run], key: str, title: str) -> int:
    """One line per run that has ``key``; returns how many were drawn."""
    drawn = 0
    for index, run in enumerate(runs):
        series = run.series.get(key)
        if series:
            steps, values = zip(*series)
            # Each later run thinner, so a run that coincides with an earlier one leaves it visible.
            axis.plot(steps, values, "-", marker="o", markersize=3, linewidth=max(1.0, 3.0 - 0.8 * index),
                      label=run.label)
            drawn += 1
    axis.set_title(title)
    axis.set_xlabel("step")
    axis.grid(alpha=0.3)
    if drawn:
        axis.legend(fontsize="small")
    else:
        axis.text(0.5, 0.5, f"no run logs {key}", ha="center", va="center", transform=axis.transAxes)
    return drawn


def _two_curves(runs, directory, file, title, caption, left, right, notes) -> Written | None:
    """A figure of two panels, ``left`` and ``right`` = (metric, panel title); skipped when no run has either."""
    if not any(run.has(key) for run in runs for key, _ in (left, right)):
        notes.append(f"{file} skipped: no run logs {left[0]} or {right[0]}")
        return None
    figure, (axis_left, axis_right) = _figure(2)
    for axis, (key, panel_title) in ((axis_left, left), (axis_right, right)):
        _lines(axis, runs, key, panel_title)
        for run in runs:
            if not run.has(key):
                notes.append(f"{file}: run {run.label!r} has no {key}")
    _save(figure, directory, file)
    return Written(file, title, caption)


def outcome_figure(runs: Sequence[Run], directory: Path, notes: list[str]) -> Written | None:
    """Train outcome (``infopo/outcome/mean``, solid) and validation reward (verl's ``val-core``, dashed)."""
    validation = {run.label: summary.validation_keys(run) for run in runs}
    if not any(run.has(summary.OUTCOME) for run in runs) and not any(validation.values()):
        notes.append(f"outcome.png skipped: no run logs {summary.OUTCOME} or a val-core reward")
        return None
    figure, (axis,) = _figure(1)
    for run in runs:
        if not run.has(summary.OUTCOME):
            notes.append(f"outcome.png: run {run.label!r} has no {summary.OUTCOME}")
        if not validation[run.label]:
            notes.append(f"outcome.png: run {run.label!r} has no val-core/<source>/reward/mean@<n>")
    _lines(axis, runs, summary.OUTCOME, "outcome reward over steps")
    for run in runs:
        for key in validation[run.label]:
            steps, values = zip(*run.series[key])
            source = summary.VALIDATION.match(key)["source"]
            axis.plot(steps, values, "--", marker="s", markersize=3, label=f"{run.label} validation ({source})")
    axis.set_ylabel("R")
    axis.legend(fontsize="small")
    _save(figure, directory, "outcome.png")
    return Written("outcome.png", "Outcome reward",
                   f"Solid: mean train outcome R ({summary.OUTCOME}, r_t excluded). Dashed: verl's validation reward.")


def heatmap_figures(runs: Sequence[Run], directory: Path, notes: list[str]) -> list[Written]:
    """Per run: ``infopo/info_gain/turn_{k}`` (left) and ``infopo/info_advantage/turn_{k}`` (right) by turn and step."""
    written = []
    for run in runs:
        gain_keys = summary.turn_keys(run, summary.INFO_GAIN_TURN)
        if not gain_keys:
            notes.append(f"heat map skipped for run {run.label!r}: it logs no {summary.INFO_GAIN_TURN}<k>")
            continue
        advantage_keys = summary.turn_keys(run, summary.INFO_ADVANTAGE_TURN)
        panels = [(gain_keys, "mean r_t by agent turn"), (advantage_keys, "mean A_info by agent turn")]
        if not advantage_keys:
            notes.append(f"heat map of run {run.label!r}: no {summary.INFO_ADVANTAGE_TURN}<k>, info gain only")
            panels = panels[:1]
        figure, axes = _figure(len(panels))
        for axis, (keys, title) in zip(axes, panels):
            steps = sorted({step for key in keys for step, _ in run.series[key]})
            column = {step: index for index, step in enumerate(steps)}
            grid = [[float("nan")] * len(steps) for _ in keys]  # [turn, step]; NaN: no such turn that step
            for turn, key in enumerate(keys):
                for step, value in run.series[key]:
                    grid[turn][column[step]] = value
            # One column per logged step, evenly spaced even when the steps are not (a run logged every 10 steps).
            image = axis.imshow(grid, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest")
            columns = range(0, len(steps), max(1, len(steps) // 10))
            axis.set_xticks(list(columns), [str(steps[index]) for index in columns])
            rows = range(0, len(keys), max(1, len(keys) // 12))
            axis.set_yticks(list(rows), [str(index) for index in rows])
            axis.set_title(f"{run.label}: {title}")
            axis.set_xlabel("step")
            axis.set_ylabel("agent turn k")
            figure.colorbar(image, ax=axis)
        file = f"turns_{_slug(run.label)}.png"
        _save(figure, directory, file)
        written.append(Written(file, f"Credit by turn: {run.label}",
                               "Mean information gain (and information advantage) of agent turn k at each step; "
                               "blank: no dialogue reached that turn."))
    return written


def all_figures(runs: Sequence[Run], directory: Path, notes: list[str]) -> list[Written]:
    """Every figure the runs allow, in page order; what cannot be drawn is named in ``notes``."""
    written = [outcome_figure(runs, directory, notes)]
    written.append(_two_curves(
        runs, directory, "mechanism.png", "InfoPO's mechanism",
        "The paper's two mechanism curves: the share of the advantage that comes from information gain falls over "
        "training while the raw information gain rises.",
        (summary.INFO_SHARE, "info share of the advantage"), (summary.INFO_GAIN, "mean raw information gain r_t"),
        notes))
    written.extend(heatmap_figures(runs, directory, notes))
    written.append(_two_curves(
        runs, directory, "gate.png", "Gate and tied groups",
        "The gate is open (0.5) while a group's outcomes are tied and closes as they separate.",
        (summary.GATE, "mean gate"), (summary.TIED, "fraction of tied groups"), notes))
    written.append(_two_curves(
        runs, directory, "dialogue_shape.png", "Dialogue shape",
        "verl's own metrics: turns per dialogue (prompt, agent turns and feedback messages) and response tokens.",
        (summary.TURNS, "turns per dialogue (num_turns/mean)"),
        (summary.RESPONSE_LENGTH, "response length (response_length/mean)"), notes))
    return [item for item in written if item is not None]
