"""``infopo-verl demo`` as a user runs it (a real subprocess), on a tiny local model: dialogues through verl's
workers, then the per-turn credit table for every dialogue."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from testkit.tiny import tiny_model_path


def test_demo_prints_a_credit_table_per_dialogue(tmp_path):
    command = [str(Path(sys.executable).with_name("infopo-verl")), "demo", "--model", tiny_model_path(tmp_path),
               "--prompts", "1", "--rollouts", "2", "algorithm.infopo.beta=0.25"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    headers = re.findall(r"^dialogue (\d+) \(group \w+\): R = [\d.]+, A_ext = [+-][\d.]+, gate = [\d.]+", out, re.M)
    assert headers == ["0", "1"]
    assert out.count("agent said") == 2 and out.count("user said") == 2
    # The report's view, in the terminal: best and worst credited turns before the dialogues.
    assert out.index("best credited turns:") < out.index("worst credited turns:") < out.index("dialogue 0 (group")
    ranked = [float(value) for value in re.findall(r"^  adv +([+-]\d\.\d{3})  dialogue \d+ turn \d+", out, re.M)]
    assert ranked and ranked[0] == max(ranked)
    measured = int(re.search(r"^(\d+) turns measured; mean r_t = [+-][\d.]+$", out, re.M).group(1))
    rows_with_gain = re.findall(r"^\s+\d+\s.*\s[+-]\d\.\d{4}\s+[+-]\d\.\d{3}\s+[+-]\d\.\d{3}$", out, re.M)
    assert measured == len(rows_with_gain) and measured > 0
