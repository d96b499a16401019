"""``infopo-verl report RUN [RUN ...] --out DIR [--dialogues DUMP_DIR]``: figures, a summary table and credit pages.

Each RUN is a file written by verl's ``file`` logger (``trainer.logger=['console','file']``), given as ``path`` (its
label is the file name) or ``label=path``. The command writes ``DIR/index.html`` with the PNG figures beside it,
and with ``--dialogues`` one credit page per dumped step under ``DIR/dialogues/``. What cannot be drawn (a GRPO run
has no ``infopo/info_gain/*``), bad log lines (named by file and line) and dump lines without a per-turn record are
listed as notes on the page and on stderr; the exit status is 0 unless a file is missing or matplotlib is not
installed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _algorithm(pairs: list[str]):
    from omegaconf import OmegaConf

    return OmegaConf.from_dotlist(["adv_estimator=infopo", *pairs])


def run_report(args: argparse.Namespace) -> int:
    from infopo_verl.report.figures import all_figures, require_matplotlib
    from infopo_verl.report.html import index_page
    from infopo_verl.report.logs import parse_run_argument, read_run
    from infopo_verl.report.summary import INFO_GAIN, choose_baseline, table

    from infopo_verl.config import ConfigError

    if not args.runs and not args.dialogues:
        raise SystemExit("infopo-verl report: give at least one RUN (a file-logger .jsonl) or --dialogues DUMP_DIR")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    dialogues_link = None
    if args.dialogues:
        from infopo_verl.report.dialogues import write_dialogue_pages

        try:
            dump = write_dialogue_pages(args.dialogues, out / "dialogues", _algorithm(args.algorithm))
        except (FileNotFoundError, ConfigError) as error:  # a missing directory, or a bad --algorithm setting
            raise SystemExit(f"infopo-verl report: {error}") from None
        notes.extend(f"dialogues: {note}" for note in dump.notes)
        dialogues_link = "dialogues/index.html"
        print(f"wrote {len(dump.pages)} dialogue pages to {out / 'dialogues'}", file=sys.stderr)

    runs = []
    for argument in args.runs:
        label, path = parse_run_argument(argument)
        try:
            runs.append(read_run(path, label))
        except FileNotFoundError as error:
            raise SystemExit(f"infopo-verl report: {error}") from None
    if len({run.label for run in runs}) != len(runs):
        raise SystemExit(f"infopo-verl report: two runs share a label ({[run.label for run in runs]}); "
                         "name them with label=path")
    for run in runs:
        notes.extend(f"skipped {bad}" for bad in run.bad_lines)
        if run.bad_lines:
            notes.append(f"run {run.label!r}: {len(run.bad_lines)} bad line(s) skipped")
        if run.non_numeric:
            notes.append(f"run {run.label!r}: {run.non_numeric} non-numeric metric value(s) left out")
        if run.repeated_steps:
            notes.append(f"run {run.label!r}: {run.repeated_steps} step(s) logged twice, the later line kept")
        if not run.names("infopo/"):
            notes.append(f"run {run.label!r} logs no infopo/* metric: only verl's own curves are drawn "
                         "(was it trained with this plugin's per-step metrics?)")

    figures, rows, baseline = [], [], None
    if runs:
        require_matplotlib()
        baseline = choose_baseline(runs, args.baseline)
        if baseline is None and len(runs) > 1:
            notes.append(f"no baseline: every run logs {INFO_GAIN}; name one with --baseline LABEL")
        figures = all_figures(runs, out, notes)
        rows = table(runs, baseline)
    page = index_page([(run.label, run.path, run.steps) for run in runs], figures, rows,
                      baseline.label if baseline else None, notes, dialogues_link)
    (out / "index.html").write_text(page, encoding="utf-8")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"wrote {out / 'index.html'} ({len(figures)} figures, {len(rows)} table rows, {len(notes)} notes)")
    return 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="figures, a summary table and per-dialogue credit pages from verl's file logs and dumps"
    )
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="a file written by verl's file logger, as path or label=path")
    parser.add_argument("--out", required=True, help="directory for index.html and the figures")
    parser.add_argument("--baseline", default=None,
                        help="label of the baseline run (default: the first run without infopo/info_gain/mean)")
    parser.add_argument("--dialogues", default=None, metavar="DUMP_DIR",
                        help="verl's rollout dump directory (trainer.rollout_data_dir): one credit page per step")
    parser.add_argument("--algorithm", action="append", default=[], metavar="KEY=VALUE",
                        help="an algorithm setting of the dumped run, as under algorithm., e.g. infopo.beta=0.3; "
                             "repeat for several (used to recompute the advantages of --dialogues; default: the "
                             "plugin's defaults)")
    parser.set_defaults(func=run_report)
