"""Task family name -> environment class, resolved lazily so a family's heavy imports load only when used.

A dataset row selects its family with ``extra_info.infopo.env`` (``infopo-verl prepare`` writes it); the rest of
``extra_info.infopo`` is the task's own fields, handed to ``Environment.from_row``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from infopo_verl.envs.base import Environment

# family -> "module:Class". New families add one line here.
FAMILIES: dict[str, str] = {
    "clarify": "infopo_verl.envs.clarify:ClarifyEnv",
    "function": "infopo_verl.envs.userrl.function:FunctionEnv",
    "telepathy": "infopo_verl.envs.userrl.telepathy:TelepathyEnv",
    "turtle": "infopo_verl.envs.userrl.turtle:TurtleEnv",
    "persuade": "infopo_verl.envs.userrl.persuade:PersuadeEnv",
    "intention": "infopo_verl.envs.userrl.intention:IntentionEnv",
    "travel": "infopo_verl.envs.userrl.travel:TravelEnv",
    "search": "infopo_verl.envs.userrl.search:SearchEnv",
    "tau": "infopo_verl.envs.userrl.tau:TauEnv",
    "colbench": "infopo_verl.envs.colbench:ColBenchEnv",
    "tau2": "infopo_verl.envs.tau2:Tau2Env",
}


def environment_class(family: str) -> type[Environment]:
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r} in extra_info.infopo.env; known: {', '.join(sorted(FAMILIES))}")
    module_name, class_name = FAMILIES[family].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def task_fields(extra_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``extra_info.infopo`` mapping of a row, with a precise error when it is missing."""
    task = (extra_info or {}).get("infopo") if isinstance(extra_info, Mapping) else None
    if not isinstance(task, Mapping) or "env" not in task:
        raise ValueError(
            "row has no extra_info.infopo.env: rows for the infopo_user agent loop are written by "
            "`infopo-verl prepare` (or carry extra_info.infopo = {'env': <family>, ...task fields})"
        )
    return dict(task)
