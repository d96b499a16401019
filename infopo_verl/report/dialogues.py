"""``infopo-verl report --dialogues DUMP_DIR``: verl's rollout dumps as one HTML credit page per step.

verl writes ``<trainer.rollout_data_dir>/<step>.jsonl`` (``_write_generations`` of both trainers): one line per
sample with ``input``, ``output``, ``gts``, ``score``, ``step`` and, on the legacy trainer, every
``reward_extra_info`` column, so the ``infopo`` reward manager's ``turn_record`` (a JSON string, see
:func:`infopo_verl.report.record.dump_record`) and ``outcome`` reach it. verl 0.9.1's v1 trainer dumps only ``uid`` besides
the text columns; :class:`~infopo_verl.report.dump.TurnRecordDumpMixin` adds the reward columns there.

The dump holds r_t and R but no advantages: :func:`infopo_verl.credit.credit_from_records` recomputes them with
the estimator and the ``algorithm`` settings given on the command line (defaults: the plugin's defaults). Each
page lists the step's best and worst credited turns first, then every dialogue with its turns coloured by the
advantage their tokens received, and a filter on the outcome R. Agent and user text is escaped.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from infopo_verl.credit import DialogueCredit, credit_from_records, dialogue_header, ranked_turns
from infopo_verl.report.html import escape, page
from infopo_verl.report.logs import BadLine, json_lines
from infopo_verl.report.record import DUMP_KEY

RANKED_TURNS = 5
"""How many best and worst credited turns head each step page (ours)."""

FILTER_SCRIPT = """
function applyFilter() {
  const low = parseFloat(document.getElementById('r-min').value);
  const high = parseFloat(document.getElementById('r-max').value);
  let shown = 0;
  for (const item of document.querySelectorAll('[data-outcome]')) {
    const r = parseFloat(item.dataset.outcome);
    const visible = !(r < low) && !(r > high);
    item.style.display = visible ? '' : 'none';
    if (visible && item.classList.contains('dialogue')) shown += 1;
  }
  document.getElementById('shown').textContent = shown;
}
for (const id of ['r-min', 'r-max']) document.getElementById(id).addEventListener('input', applyFilter);
"""


@dataclasses.dataclass
class StepPage:
    step: int
    file: str
    dialogues: int
    without_record: int


@dataclasses.dataclass
class DumpReport:
    pages: list[StepPage]
    bad_lines: list[BadLine]
    notes: list[str]


def _step_of(path: Path) -> int | None:
    return int(path.stem) if re.fullmatch(r"\d+", path.stem) else None


def credit_colour(advantage: float, scale: float) -> str:
    """Background of a turn: green for positive credit, red for negative, stronger with |advantage| / scale."""
    strength = 0.0 if scale <= 0 else min(abs(advantage) / scale, 1.0)
    red, green, blue = (46, 160, 67) if advantage >= 0 else (207, 34, 46)
    return f"rgba({red}, {green}, {blue}, {0.08 + 0.5 * strength:.3f})"


def _turn_rows(dialogue: DialogueCredit, scale: float) -> str:
    rows = []
    for turn in dialogue.turns:
        gain = "-" if turn.info_gain is None else f"{turn.info_gain:+.4f}"
        user = "-" if turn.user is None else turn.user
        rows.append(
            f'<tr style="background: {credit_colour(turn.advantage, scale)}"><td>{turn.turn}</td>'
            f'<td class="text">{escape(turn.agent)}</td><td class="text">{escape(user)}</td>'
            f'<td class="num">{escape(gain)}</td><td class="num">{turn.info_advantage:+.3f}</td>'
            f'<td class="num">{turn.advantage:+.3f}</td></tr>'
        )
    return "\n".join(rows)


TURN_HEADER = "<tr><th>turn</th><th>agent said</th><th>user said</th><th>r_t</th><th>A_info</th><th>advantage</th></tr>"


def _ranked_table(title: str, pairs, scale: float) -> str:
    rows = []
    for dialogue, turn in pairs:
        user = "-" if turn.user is None else turn.user
        rows.append(
            f'<tr data-outcome="{dialogue.outcome!r}" style="background: {credit_colour(turn.advantage, scale)}">'
            f'<td class="num">{turn.advantage:+.3f}</td><td><a href="#dialogue-{dialogue.row}">dialogue '
            f"{dialogue.row}</a>, turn {turn.turn}</td><td class=\"num\">{dialogue.outcome:.3f}</td>"
            f'<td class="text">{escape(turn.agent)}</td><td class="text">{escape(user)}</td></tr>'
        )
    return (f"<h2>{escape(title)}</h2>\n<table><tr><th>advantage</th><th>where</th><th>R</th><th>agent said</th>"
            f"<th>user said</th></tr>\n" + "\n".join(rows) + "\n</table>")


def step_page(step: int, dialogues: Sequence[DialogueCredit], notes: Sequence[str]) -> str:
    """The HTML page of one step's dialogues."""
    scale = max((abs(turn.advantage) for dialogue in dialogues for turn in dialogue.turns), default=0.0)
    outcomes = [dialogue.outcome for dialogue in dialogues]
    # Bounds rounded outwards to 4 decimals (readable inputs that still include every dialogue).
    low = math.floor(min(outcomes) * 1e4) / 1e4 if outcomes else 0.0
    high = math.ceil(max(outcomes) * 1e4) / 1e4 if outcomes else 0.0
    best, worst = ranked_turns(dialogues, RANKED_TURNS)
    parts = [f"<h1>Step {step}: credit per turn</h1>",
             '<p><a href="index.html">all steps</a>. Turns are coloured by the advantage their tokens received '
             "(green positive, red negative). A_info and the advantages are recomputed from the dumped r_t and "
             "outcomes with the estimator.</p>"]
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{escape(note)}</li>" for note in notes) + "</ul>")
    parts.append(
        f'<p class="controls">Outcome R from <input id="r-min" type="number" step="any" value="{low!r}"> to '
        f'<input id="r-max" type="number" step="any" value="{high!r}">: <span id="shown">{len(dialogues)}</span> '
        f"of {len(dialogues)} dialogues shown.</p>"
    )
    parts.append(_ranked_table("Best credited turns", best, scale))
    parts.append(_ranked_table("Worst credited turns", worst, scale))
    parts.append("<h2>Dialogues</h2>")
    for dialogue in dialogues:
        parts.append(
            f'<div class="dialogue" id="dialogue-{dialogue.row}" data-outcome="{dialogue.outcome!r}">'
            f"<h3>{escape(dialogue_header(dialogue))}</h3><table>{TURN_HEADER}\n{_turn_rows(dialogue, scale)}"
            "</table></div>"
        )
    return page(f"step {step}: credit per turn", "\n".join(parts), FILTER_SCRIPT)


def _read_dump(path: Path, bad_lines: list[BadLine]) -> tuple[list[dict], list[float], int, bool]:
    """Records and outcomes of one dump file, the number of lines without a record, and whether the outcome had
    to come from verl's ``score`` column (R + sum r_t on InfoPO runs before outcome-only scores)."""
    records, outcomes = [], []
    without = 0
    from_score = False
    for number, line in json_lines(path, bad_lines):
        if not isinstance(line, dict):
            bad_lines.append(BadLine(str(path), number, "not a JSON object"))
            continue
        raw = line.get(DUMP_KEY)
        try:
            record = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError as error:
            bad_lines.append(BadLine(str(path), number, f"{DUMP_KEY} is not JSON ({error.msg})"))
            continue
        if not isinstance(record, dict) or not record.get("turn_spans"):
            without += 1
            continue
        outcome = line.get("outcome")
        if isinstance(outcome, bool) or not isinstance(outcome, (int, float)):
            outcome, from_score = line.get("score", 0.0), True
        if record.get("uid") is None:
            # Without the group id, the prompt text identifies the group (verl dumps whole groups).
            record["uid"] = line.get("input", "")
        records.append(record)
        outcomes.append(float(outcome))
    return records, outcomes, without, from_score


def write_dialogue_pages(dump_dir: str | Path, out_dir: str | Path, algorithm) -> DumpReport:
    """One ``step_<s>.html`` per ``<s>.jsonl`` of ``dump_dir``, and an ``index.html``, under ``out_dir``."""
    dump_dir, out_dir = Path(dump_dir), Path(out_dir)
    if not dump_dir.is_dir():
        raise FileNotFoundError(f"--dialogues {dump_dir}: not a directory (verl writes trainer.rollout_data_dir)")
    files = sorted((path for path in dump_dir.glob("*.jsonl") if _step_of(path) is not None), key=_step_of)
    notes: list[str] = []
    if not files:
        notes.append(f"{dump_dir} holds no <step>.jsonl file: is it trainer.rollout_data_dir?")
    out_dir.mkdir(parents=True, exist_ok=True)
    pages: list[StepPage] = []
    bad_lines: list[BadLine] = []
    for path in tqdm(files, desc="dialogue dumps", unit="step", disable=None):
        step = _step_of(path)
        records, outcomes, without, from_score = _read_dump(path, bad_lines)
        step_notes = []
        if without:
            step_notes.append(f"{without} line(s) of {path.name} carry no {DUMP_KEY} (another agent loop, or a "
                              "trainer whose dump leaves out reward_extra_info): not shown")
        if from_score:
            step_notes.append(f"{path.name} has no outcome column: R taken from verl's score column")
        notes.extend(f"step {step}: {note}" for note in step_notes)
        dialogues = credit_from_records(records, outcomes, algorithm) if records else []
        file = f"step_{step}.html"
        (out_dir / file).write_text(step_page(step, dialogues, step_notes), encoding="utf-8")
        pages.append(StepPage(step, file, len(dialogues), without))
    notes.extend(f"skipped {bad}" for bad in bad_lines)
    items = "\n".join(f'<li><a href="{escape(item.file)}">step {item.step}</a>: {item.dialogues} dialogues</li>'
                      for item in pages)
    notes_html = "".join(f"<li>{escape(note)}</li>" for note in notes)
    body = (f"<h1>Per-dialogue credit</h1><p>From {escape(dump_dir)}.</p>"
            + (f'<ul class="notes" id="notes">{notes_html}</ul>' if notes else "") + f"<ul>{items}</ul>")
    (out_dir / "index.html").write_text(page("per-dialogue credit", body), encoding="utf-8")
    return DumpReport(pages, bad_lines, notes)
