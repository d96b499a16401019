"""The signal-validity experiment: mean r_t with an informative versus an uninformative scripted user.

Used by ``tests/rollout/test_signal_validity_on_cpu.py`` and ``benchmarks/bench_signal_validity.py``. Both runs
use the same tasks, model and sampling seed; only the user's replies differ (``algorithm.infopo.env.uninformative``).

The agent samples at temperature 0.5 (ours; the paper samples Qwen3 at 0.6). At temperature 1 the 0.4M-parameter
model's samples often wander into text it barely predicts, where any two contexts, "I don't know." and the
placeholder included, disagree by chance: measured on 6 tasks x 3 rollouts, the uninformative mean r_t was 0.058
against 0.078 informative. At 0.5 the same model gave 0.005 against 0.134. r_t itself is always scored with the
raw (temperature-1) log-probs, here through the rescoring path.
"""

from __future__ import annotations

import dataclasses
import math
import statistics

from infopo_verl.demo import DEFAULT_OVERRIDES
from infopo_verl.envs.clarify import generate_rows
from infopo_verl.local.pipeline import run_dialogues
from infopo_verl.rollout.record import RolloutRecord

TEMPERATURE = 0.5
"""Agent sampling temperature of the experiment (see the module docstring)."""


@dataclasses.dataclass(frozen=True)
class ValidityResult:
    informative: list[float]
    uninformative: list[float]

    @property
    def informative_mean(self) -> float:
        return statistics.fmean(self.informative)

    @property
    def uninformative_mean(self) -> float:
        return statistics.fmean(self.uninformative)

    @property
    def informative_median(self) -> float:
        return statistics.median(self.informative)

    @property
    def uninformative_median(self) -> float:
        return statistics.median(self.uninformative)

    @property
    def welch_t(self) -> float:
        """Welch's t statistic of informative minus uninformative mean r_t (unequal variances)."""
        standard_error = math.sqrt(
            statistics.variance(self.informative) / len(self.informative)
            + statistics.variance(self.uninformative) / len(self.uninformative)
        )
        return (self.informative_mean - self.uninformative_mean) / standard_error

    @property
    def ratio(self) -> float:
        """informative / uninformative mean; infinite when the uninformative mean is not positive."""
        return self.informative_mean / self.uninformative_mean if self.uninformative_mean > 0 else float("inf")


def measured_gains(batch) -> list[float]:
    records = (RolloutRecord.from_batch(batch.non_tensor_batch, row) for row in range(len(batch)))
    return [gain for record in records for gain in record.measured_gains]


def informative_vs_uninformative(model_path: str, prompts: int, rollouts: int, seed: int = 0) -> ValidityResult:
    rows = generate_rows(prompts, seed=seed, split="test")
    settings = [*DEFAULT_OVERRIDES, f"actor_rollout_ref.rollout.n={rollouts}", f"actor_rollout_ref.rollout.temperature={TEMPERATURE}"]
    gains = {}
    for uninformative in (False, True):
        overrides = [*settings, f"+algorithm.infopo.env.uninformative={str(uninformative).lower()}"]
        _, batch = run_dialogues(model_path, rows, overrides, seed=seed)
        gains[uninformative] = measured_gains(batch)
        if not gains[uninformative]:
            raise RuntimeError(f"no turn was measured (uninformative={uninformative}): dialogues too short?")
    return ValidityResult(informative=gains[False], uninformative=gains[True])
