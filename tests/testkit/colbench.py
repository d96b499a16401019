"""Synthetic ColBench backend tasks in the real row format (ColBench's own data is CC-BY-NC and never used here).

Each task has the real fields (``problem_description``, ``hidden_information`` = the reference code, as in the
backend split, ``ground_truth``, ``test_cases``), plus, for the tests only, ``replies``: what a scripted agent says,
turn by turn. :func:`in_process_fraction` is the independent oracle: ColBench's rule computed by executing both
codes in this process (safe: the code is ours), with no sandbox and no plain-data encoding involved.
"""

from __future__ import annotations

import json
from pathlib import Path

TIP = (
    "import math\n\n"
    "def _rounded(value):\n"
    "    return math.floor(value * 100 + 0.5) / 100\n\n"
    "def tip_total(bill, percent=15):\n"
    "    if bill < 0:\n"
    "        raise ValueError('negative bill')\n"
    "    return _rounded(bill * (1 + percent / 100))\n"
)
TIP_ANSWER = (  # right except for percent=0, and no error for a negative bill
    "def tip_total(bill, percent=15):\n"
    "    percent = percent or 15\n"
    "    return round(bill * (1 + percent / 100), 2)\n"
)
LOOKUP = (
    "def lookup_age(people, name):\n"
    "    for person, age in people:\n"
    "        if person == name:\n"
    "            return {'name': person, 'age': age}\n"
    "    return None\n"
)
LOOKUP_ANSWER = "def lookup_age(people, name):\n    return next(({'name': p, 'age': a} for p, a in people if p == name), None)\n"
GROUPS = (
    "def group_by_length(words):\n"
    "    groups = {}\n"
    "    for word in words:\n"
    "        groups.setdefault(len(word), []).append(word)\n"
    "    return groups\n\n"
    "def span(values):\n"
    "    return (min(values), max(values))\n"
)
GROUPS_ANSWER = (  # right groups with int keys; span as a list, which is not the tuple asked for
    "from collections import defaultdict\n\n"
    "def group_by_length(words):\n"
    "    groups = defaultdict(list)\n"
    "    for word in words:\n"
    "        groups[len(word)].append(word)\n"
    "    return groups\n\n"
    "def span(values):\n"
    "    return [min(values), max(values)]\n"
)
SLUG = "def make_slug(title):\n    return '-'.join(title.lower().split())\n"
SLUG_ANSWER = "def make_slug(title):\n    return '-'.join(title.split())\n"

SQUARE = "def square_all(values):\n    return [value * value for value in values]\n"

TASKS = [
    {
        "problem_description": "I need tip_total(bill, percent) that gives the bill with the tip added.",
        "hidden_information": TIP,
        "ground_truth": TIP,
        "test_cases": {"test1": "tip_total(100)", "test2": "tip_total(80, 20)", "test3": "tip_total(19.99, 10)",
                       "test4": "tip_total(50, 0)", "test5": "tip_total(-5)"},
        "replies": ["What percent should the default be, and how should it round?",
                    f"Thanks. I WANT TO ANSWER:\n```python\n{TIP_ANSWER}```\nThis should do it."],
    },
    {
        "problem_description": "Write lookup_age(people, name) to find a person in a list of (name, age) pairs.",
        "hidden_information": LOOKUP,
        "ground_truth": LOOKUP,
        "test_cases": {"found": "lookup_age([('ann', 31), ('bob', 40)], 'bob')",
                       "missing": "lookup_age([('ann', 31)], 'cid')", "empty": "lookup_age([], 'ann')"},
        "replies": [f"I WANT TO ANSWER: {LOOKUP_ANSWER}"],
    },
    {
        "problem_description": "I want group_by_length(words) and span(values) helpers for my word stats.",
        "hidden_information": GROUPS,
        "ground_truth": GROUPS,
        "test_cases": {"groups": "group_by_length(['a', 'bb', 'cc', 'd'])", "span": "span([3, 1, 2])"},
        "replies": ["Should span return a list or something else?",
                    f"I WANT TO ANSWER:\n```\n{GROUPS_ANSWER}```"],
    },
    {
        "problem_description": "Make make_slug(title) that turns a post title into a URL slug.",
        "hidden_information": SLUG,
        "ground_truth": SLUG,
        "test_cases": {"simple": "make_slug('hello world')", "upper": "make_slug('Hello World')",
                       "spaces": "make_slug('a  b')"},
        # Never says the marker: at the turn limit the last reply is judged as the answer.
        "replies": ["Lower case or not?", f"Here is a draft:\n```python\n{SLUG_ANSWER}```"],
    },
    {
        "problem_description": "I need square_all(values), squaring each number of a list.",
        "hidden_information": SQUARE,
        "ground_truth": SQUARE,
        "test_cases": {"ints": "square_all([1, 2, 3])", "empty": "square_all([])"},
        "replies": [f"I WANT TO ANSWER:\n```python\n{SQUARE}```"],
    },
]


def task_fields(task: dict) -> dict:
    """The row fields of a synthetic task, as ColBench's jsonl holds them."""
    return {key: task[key] for key in ("problem_description", "hidden_information", "ground_truth", "test_cases")}


def write_jsonl(folder: Path, train: list[dict], test: list[dict], extra_train_lines: list[str] = ()) -> Path:
    """``folder/train.jsonl`` and ``folder/test.jsonl`` of the tasks' row fields (plus raw extra lines)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(task_fields(task)) for task in train] + list(extra_train_lines)
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "test.jsonl").write_text("\n".join(json.dumps(task_fields(task)) for task in test) + "\n",
                                       encoding="utf-8")
    return folder


def in_process_fraction(task: dict, reply: str) -> float:
    """ColBench's score of ``reply`` for ``task``, computed here from scratch (the test oracle)."""
    marker = "I WANT TO ANSWER:"
    code = reply.split(marker, 1)[1] if marker in reply else reply
    if "```" in code:
        code = code.split("```", 2)[1].split("\n", 1)[1]
    code = code.strip()
    reference: dict = {}
    exec(task["ground_truth"], reference)  # noqa: S102 - our own synthetic code
    candidate: dict = {}
    exec(code, candidate)  # noqa: S102
    passed = 0
    for call in task["test_cases"].values():
        try:
            expected = eval(call, reference)  # noqa: S307
        except Exception:  # noqa: BLE001 - a failing reference test cannot pass
            continue
        try:
            output = eval(call, candidate)  # noqa: S307
        except Exception:  # noqa: BLE001
            continue
        passed += expected is not None and output == expected
    return passed / len(task["test_cases"])
