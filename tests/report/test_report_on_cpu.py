"""``infopo-verl report`` end to end on CPU, on logs and dumps written by verl's own code.

Two runs of the CPU pipeline (``infopo_verl.local.pipeline``: verl's AgentLoopWorker, a Ray RewardLoopWorker and
``compute_advantage`` on the built-in clarify task, the tiny trained model), several batches each: an InfoPO run
and its GRPO baseline (``adv_estimator=grpo``, ``info_gain=false``). Every step's metrics (verl's own
``compute_data_metrics`` and the ``infopo/*`` metrics) go through verl's ``Tracking`` with the ``file`` backend;
the InfoPO run's batches also go through the legacy trainer's own ``_log_rollout_data`` (verl's dump code). The
report is built by the real command in a subprocess and checked against values computed here from the logs.

Set ``INFOPO_REPORT_KEEP=<dir>`` to keep the logs and the dump, and ``INFOPO_REPORT_STEPS`` for more batches
(default 3): the README's picture is made so (docs/report.md).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from testkit.tiny import trained_model_path
from verl.trainer.ppo.metric_utils import compute_data_metrics
from verl.trainer.ppo.ray_trainer import RayPPOTrainer
from verl.trainer.ppo.reward import extract_reward
from verl.utils.tracking import Tracking

from infopo_verl.credit import credit_view
from infopo_verl.demo import DEFAULT_OVERRIDES
from infopo_verl.envs.clarify import generate_rows
from infopo_verl.local.pipeline import LocalPipeline, compose_config, load_batch
from infopo_verl.local.server import LocalLLMServer
from infopo_verl.metrics import step_metrics
from infopo_verl.report.figures import FIGURE_PIXELS
from infopo_verl.report.html import number
from infopo_verl.report.record import DUMP_KEY

STEPS = int(os.environ.get("INFOPO_REPORT_STEPS", "3"))
PROMPTS_PER_STEP = 2
OVERRIDES = [*DEFAULT_OVERRIDES, "actor_rollout_ref.rollout.n=2"]
BASELINE_OVERRIDES = [*OVERRIDES, "algorithm.adv_estimator=grpo", "algorithm.infopo.info_gain=false"]


def _infopo_metrics(batch, algorithm) -> dict[str, float]:
    """The per-step ``infopo/*`` metrics of a batch after ``compute_advantage``, as the trainer logs them."""
    return step_metrics(batch, algorithm)


def _dump_with_verl(batch, tokenizer, step: int, dump_dir: Path) -> None:
    """verl's legacy trainer writes ``<dump_dir>/<step>.jsonl`` with its own ``_log_rollout_data``."""
    trainer = object.__new__(RayPPOTrainer)  # only the dump code's state: tokenizer, step, executor
    trainer.tokenizer = tokenizer
    trainer.global_steps = step
    trainer._init_dump_executor()
    _, reward_extra_infos = extract_reward(batch)
    trainer._log_rollout_data(batch, reward_extra_infos, {}, str(dump_dir))
    trainer._shutdown_dump_executor()


def _run(name: str, overrides: list[str], directory: Path, dump_dir: Path | None, monkeypatch) -> tuple[Path, list]:
    """``STEPS`` batches through the CPU pipeline, logged by verl's Tracking (file backend). Returns the log path
    and each step's batch."""
    model = trained_model_path()
    config = compose_config(model, overrides)
    rollout = config.actor_rollout_ref.rollout
    log_path = directory / f"{name}.jsonl"
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(log_path))
    tracking = Tracking(project_name="infopo-report-test", experiment_name=name, default_backend="file")
    pipeline = LocalPipeline(config, LocalLLMServer(model, max_model_len=rollout.prompt_length + rollout.response_length))
    batches = []
    try:
        for step in range(1, STEPS + 1):
            rows_file = directory / f"{name}-rows-{step}.parquet"
            pd.DataFrame(generate_rows(PROMPTS_PER_STEP, seed=step, split="train")).to_parquet(rows_file)
            batch = pipeline.advantages(pipeline.rollout(load_batch(config, [rows_file], pipeline.tokenizer)))
            metrics = {**compute_data_metrics(batch, use_critic=False), **_infopo_metrics(batch, config.algorithm)}
            tracking.log(data=metrics, step=step)
            if dump_dir is not None:
                _dump_with_verl(batch, pipeline.tokenizer, step, dump_dir)
            batches.append(batch)
    finally:
        pipeline.close()
        tracking.finish()
    return log_path, batches


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    directory = tmp_path_factory.mktemp("runs")
    dump_dir = directory / "rollout_dump"
    try:
        infopo_log, infopo_batches = _run("infopo", OVERRIDES, directory, dump_dir, monkeypatch)
        grpo_log, _ = _run("grpo", BASELINE_OVERRIDES, directory, None, monkeypatch)
    finally:
        monkeypatch.undo()
    return {"infopo": infopo_log, "grpo": grpo_log, "dump": dump_dir, "batches": infopo_batches,
            "config": compose_config(trained_model_path(), OVERRIDES)}


def report(*arguments: str) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("infopo-verl")), "report", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


class Page(HTMLParser):
    """Images, headings, and the summary table's rows as (curve, run) -> [(text, attributes)] of its cells."""

    def __init__(self):
        super().__init__()
        self.images, self.rows, self.headings = [], {}, []
        self._row = self._cell = self._heading = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "tr" and "data-curve" in attrs:
            self._row = self.rows.setdefault((attrs["data-curve"], attrs["data-run"]), [])
        elif tag == "td" and self._row is not None:
            self._cell = ["", attrs]
        elif tag in ("h1", "h2", "h3"):
            self._heading = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0] += data
        if self._heading is not None:
            self._heading += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append(tuple(self._cell))
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append(self._heading)
            self._heading = None


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.rows = {key: cells[2:] for key, cells in page.rows.items()}  # final, best, first step above the baseline
    return page


def series_from_log(path: Path, key: str) -> list[tuple[int, float]]:
    """Read back with json alone: (step, value) of ``key`` on every line that has it."""
    points = []
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        # null: the metric was undefined that step (a mean over nothing is NaN, which the file backend writes as null)
        if entry["data"].get(key) is not None:
            points.append((entry["step"], float(entry["data"][key])))
    return sorted(points)


def test_report_from_two_pipeline_runs(runs, tmp_path):
    out = tmp_path / "report"
    result = report(f"infopo={runs['infopo']}", f"grpo={runs['grpo']}", "--out", str(out), "--baseline", "grpo")
    assert result.returncode == 0, result.stderr[-3000:]

    with_turns = [name for name in ("infopo", "grpo") if series_from_log(runs[name], "infopo/info_gain/turn_0")]
    assert "infopo" in with_turns
    expected = ["outcome.png", "mechanism.png", *(f"turns_{name}.png" for name in with_turns), "gate.png",
                "dialogue_shape.png"]
    for name in expected:
        assert (out / name).stat().st_size > 1000, name
        assert png_size(out / name) == FIGURE_PIXELS, name
    page = parse(out / "index.html")
    assert page.images == expected
    # A curve the baseline does not log (a GRPO run measures no info gain) is named in a note, not an error.
    for key in ("infopo/info_share", "infopo/info_gain/mean"):
        if series_from_log(runs["grpo"], key):
            assert (key, "grpo") in page.rows
        else:
            assert f"mechanism.png: run 'grpo' has no {key}" in result.stderr and (key, "grpo") not in page.rows
    if "grpo" not in with_turns:
        assert "heat map skipped for run 'grpo'" in result.stderr

    # The table's numbers, recomputed from the logs with json alone.
    outcome = {name: series_from_log(runs[name], "infopo/outcome/mean") for name in ("infopo", "grpo")}
    assert len(outcome["infopo"]) == STEPS and len(outcome["grpo"]) == STEPS
    final, best, first = page.rows[("infopo/outcome/mean", "infopo")]
    final_step, final_value = outcome["infopo"][-1]
    assert float(final[1]["data-value"]) == final_value and final[0] == f"{number(final_value)} (step {final_step})"
    best_value = max(value for _, value in outcome["infopo"])
    best_step = min(step for step, value in outcome["infopo"] if value == best_value)
    assert float(best[1]["data-value"]) == best_value and best[0] == f"{number(best_value)} (step {best_step})"
    above = [step for (step, a), (_, b) in zip(outcome["infopo"], outcome["grpo"], strict=True) if a > b]
    assert first[0] == (str(above[0]) if above else "never")
    assert page.rows[("infopo/outcome/mean", "grpo")][2][0] == "-"  # the baseline is not compared with itself

    for key, run in [("infopo/info_share", "infopo"), ("infopo/gate/mean", "infopo"), ("num_turns/mean", "grpo"),
                     ("response_length/mean", "infopo"), ("infopo/tied_group_fraction", "grpo")]:
        cells = page.rows[(key, run)]
        assert float(cells[0][1]["data-value"]) == series_from_log(runs[run], key)[-1][1], (key, run)
    tied = series_from_log(runs["infopo"], "infopo/tied_group_fraction")
    best_tied = page.rows[("infopo/tied_group_fraction", "infopo")][1]
    assert float(best_tied[1]["data-value"]) == min(value for _, value in tied)  # fewer tied groups is better
    gain = series_from_log(runs["infopo"], "infopo/info_gain/mean")
    assert float(page.rows[("infopo/info_gain/mean", "infopo")][1][1]["data-value"]) == max(v for _, v in gain)

    keep = os.environ.get("INFOPO_REPORT_KEEP")
    if keep:
        shutil.copytree(runs["dump"], Path(keep) / "rollout_dump", dirs_exist_ok=True)
        for name in ("infopo", "grpo"):
            shutil.copy(runs[name], Path(keep) / f"{name}.jsonl")


def test_dialogue_pages_from_verls_own_dump(runs, tmp_path):
    out = tmp_path / "report"
    result = report("--dialogues", str(runs["dump"]), "--out", str(out), "--algorithm", "infopo.beta=0.5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.name for path in runs["dump"].glob("*.jsonl")) == [f"{s}.jsonl" for s in range(1, STEPS + 1)]
    for step, batch in enumerate(runs["batches"], start=1):
        # verl's dump really carries the per-turn record.
        lines = [json.loads(line) for line in (runs["dump"] / f"{step}.jsonl").read_text().splitlines()]
        assert len(lines) == len(batch) and all(json.loads(line[DUMP_KEY])["turn_spans"] for line in lines)

        # Credit recomputed from the dump equals the credit of the batch verl's compute_advantage produced.
        truth = credit_view(batch, runs["config"].algorithm)
        page_text = (out / "dialogues" / f"step_{step}.html").read_text(encoding="utf-8")
        page = parse(out / "dialogues" / f"step_{step}.html")
        assert page.headings[1:4] == ["Best credited turns", "Worst credited turns", "Dialogues"]
        for dialogue in truth:
            assert f'id="dialogue-{dialogue.row}" data-outcome="{dialogue.outcome!r}"' in page_text
            for turn in dialogue.turns:
                assert f"{turn.info_advantage:+.3f}</td><td class=\"num\">{turn.advantage:+.3f}</td></tr>" in page_text
        best = max(turn.advantage for dialogue in truth for turn in dialogue.turns)
        first_ranked = page_text.split("<h2>Best credited turns</h2>")[1].split('<td class="num">')[1]
        assert first_ranked.startswith(f"{best:+.3f}")
    assert "step 1" in (out / "dialogues" / "index.html").read_text()


def test_dialogue_text_is_escaped_and_bad_dump_lines_are_counted(runs, tmp_path):
    """Untrusted agent / user text reaches the page only escaped; a broken dump line is named and skipped."""
    lines = (runs["dump"] / "1.jsonl").read_text().splitlines()
    entry = json.loads(lines[0])
    record = json.loads(entry[DUMP_KEY])
    record["feedback_texts"][0] = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    entry[DUMP_KEY] = json.dumps(record)
    dump = tmp_path / "dump"
    dump.mkdir()
    (dump / "1.jsonl").write_text("\n".join([json.dumps(entry), *lines[1:], "{not json"]) + "\n")
    result = report("--dialogues", str(dump), "--out", str(tmp_path / "report"))
    assert result.returncode == 0, result.stderr[-3000:]
    page_text = (tmp_path / "report" / "dialogues" / "step_1.html").read_text()
    assert "<script>alert" not in page_text and "<img src=x" not in page_text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page_text
    assert f"{dump / '1.jsonl'}:{len(lines) + 1}: not JSON" in result.stderr


def _log_with_tracking(path: Path, name: str, rows: list[dict], monkeypatch) -> None:
    monkeypatch.setenv("VERL_FILE_LOGGER_PATH", str(path))
    tracking = Tracking(project_name="infopo-report-test", experiment_name=name, default_backend="file")
    for step, data in enumerate(rows, start=1):
        tracking.log(data=data, step=step)
    tracking.finish()


def test_a_malformed_line_and_a_log_without_infopo_metrics_still_make_a_report(tmp_path, monkeypatch):
    infopo = tmp_path / "infopo.jsonl"
    _log_with_tracking(infopo, "infopo", [
        {"infopo/outcome/mean": 0.1 * s, "infopo/info_gain/mean": 0.01 * s, "infopo/info_share": 0.5 - 0.1 * s,
         "infopo/gate/mean": 0.4, "infopo/tied_group_fraction": 0.5, "infopo/info_gain/turn_0": 0.02 * s,
         "val-core/infopo_clarify/reward/mean@2": 0.2 * s, "val-core/infopo_clarify/reward/mean@1": 9.0,
         "num_turns/mean": 5.0, "response_length/mean": 80.0 + s} for s in range(1, 5)], monkeypatch)
    stock = tmp_path / "stock.jsonl"
    _log_with_tracking(stock, "stock", [{"critic/score/mean": 0.3, "num_turns/mean": 4.0,
                                         "response_length/mean": 70.0, "val-core/infopo_clarify/reward/mean@2": 0.25}
                                        for _ in range(4)], monkeypatch)
    with infopo.open("a") as handle:
        handle.write('{"step": 5, "data": {"infopo/outcome/mean": 0.9\n')  # a run killed mid-write
        handle.write('["not", "a", "step"]\n')
    out = tmp_path / "report"
    result = report(str(infopo), str(stock), "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"{infopo}:5: not JSON" in result.stderr and f"{infopo}:6: not " in result.stderr
    assert "run 'infopo': 2 bad line(s) skipped" in result.stderr
    assert "run 'stock' logs no infopo/* metric" in result.stderr
    page = parse(out / "index.html")
    notes = (out / "index.html").read_text()
    assert "run &#x27;stock&#x27; logs no infopo/* metric" in notes
    assert page.images == ["outcome.png", "mechanism.png", "turns_infopo.png", "gate.png", "dialogue_shape.png"]
    # Validation: the largest n per source; the stock run is the baseline (no info gain) and is compared on it.
    validation = page.rows[("val-core/infopo_clarify/reward/mean@2", "infopo")]
    assert float(validation[0][1]["data-value"]) == pytest.approx(0.8) and validation[2][0] == "2"
    assert ("val-core/infopo_clarify/reward/mean@1", "infopo") not in page.rows
    assert ("infopo/outcome/mean", "stock") not in page.rows
    assert not math.isnan(float(page.rows[("num_turns/mean", "stock")][0][1]["data-value"]))
