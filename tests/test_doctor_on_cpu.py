"""``infopo-verl doctor`` in real subprocesses: it sees the three components after a bare ``import verl`` in a
fresh process and in a Ray worker, and it fails loudly when verl is told not to load plugins."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

DOCTOR = [str(Path(sys.executable).with_name("infopo-verl")), "doctor"]


def run_doctor(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*DOCTOR, *args], capture_output=True, text=True, env={**os.environ, **env}, timeout=300, check=False
    )


def test_doctor_sees_every_component_in_a_fresh_process_and_a_ray_worker():
    result = run_doctor()
    assert result.returncode == 0, result.stdout + result.stderr
    for where in ("fresh process", "Ray worker"):
        section = result.stdout.split(f"import verl`, {where}")[1].split("registration after")[0]
        for component in ("advantage estimator 'infopo'", "reward manager 'infopo'", "agent loop 'infopo_user'"):
            assert f"[ok]        {component} registered" in section, (where, component, result.stdout)
    assert "result: OK" in result.stdout


@pytest.mark.parametrize("policy", ["some_other_plugin"])
def test_doctor_fails_when_verl_will_not_load_the_plugin(policy):
    result = run_doctor("--no-ray", VERL_USE_EXTERNAL_PLUGINS=policy)
    assert result.returncode == 1
    assert "VERL_USE_EXTERNAL_PLUGINS" in result.stdout
    assert "NOT registered" in result.stdout
    assert "result: BROKEN" in result.stdout
