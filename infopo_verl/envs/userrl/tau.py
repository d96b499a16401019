"""TauGym (tau-bench v1 retail/airline through ``search`` / ``action`` / ``answer``): not available in this build.

UserRL's TauGym drives tau-bench's own retail and airline environments (their databases, tools and user
simulator). tau-bench is not published on PyPI (``pip download tau-bench`` finds no distribution), so this plugin
cannot depend on it, and the bridge to it is not implemented. A tau row therefore stops with an error that says
what to do; ``infopo-verl prepare userrl --exclude-family tau`` writes the mixes without tau rows (the dropped
rows are counted and reported).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from infopo_verl.envs.base import Action, Environment, StepResult
from infopo_verl.envs.userrl.common import load_task
from infopo_verl.users.base import UserSimulator

__all__ = ["TauEnv", "INSTALL_HINT"]

INSTALL_HINT = "pip install git+https://github.com/sierra-research/tau-bench"


class TauEnv(Environment):
    family = "tau"

    @classmethod
    def from_row(cls, row: Mapping[str, Any], user: UserSimulator | None, options: Mapping[str, Any]) -> TauEnv:
        task = load_task(row, cls.family)
        where = f"tau task {task.get('id', '?')!r}"
        if importlib.util.find_spec("tau_bench") is None:
            raise ValueError(
                f"{where} needs the tau-bench package, which is not on PyPI and not installed: install it from "
                f"source ({INSTALL_HINT}); note that infopo-verl does not implement the TauGym bridge yet, so "
                f"prepare the data without tau rows: `infopo-verl prepare userrl ... --exclude-family tau`"
            )
        raise ValueError(
            f"{where}: tau-bench is installed, but infopo-verl does not implement the TauGym bridge yet; prepare "
            f"the data without tau rows: `infopo-verl prepare userrl ... --exclude-family tau`"
        )

    async def step(self, action: Action) -> StepResult:  # pragma: no cover - from_row never builds one
        raise NotImplementedError

    async def final_score(self) -> float:  # pragma: no cover
        raise NotImplementedError
