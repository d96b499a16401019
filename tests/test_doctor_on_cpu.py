"""``infopo-verl doctor`` in real subprocesses: it sees the four registered names after a bare ``import verl`` in a
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
        for component in ("advantage estimator 'infopo'", "reward manager 'infopo'", "agent loop 'infopo_user'",
                          "v1 trainer mode 'infopo_sync'"):
            assert f"[ok]        {component} registered" in section, (where, component, result.stdout)
    assert "result: OK" in result.stdout


def test_doctor_reports_whether_the_colbench_sandbox_can_be_built():
    """Doctor's sandbox line agrees with the sandbox's own probe, run here; a missing sandbox is a note, not BROKEN."""
    from infopo_verl.sandbox import namespaces_available

    result = run_doctor("--no-ray")
    section = result.stdout.split("ColBench judge sandbox")[1].split("result:")[0]
    available, why = namespaces_available()
    if available:
        assert "[ok]        namespace isolation" in section, result.stdout
    else:
        assert f"[note]      namespace isolation cannot be built here ({why})" in section, result.stdout
        assert "colbench_isolation=none" in section
    assert "result: OK" in result.stdout


@pytest.mark.parametrize("policy", ["some_other_plugin"])
def test_doctor_fails_when_verl_will_not_load_the_plugin(policy):
    result = run_doctor("--no-ray", VERL_USE_EXTERNAL_PLUGINS=policy)
    assert result.returncode == 1
    assert "VERL_USE_EXTERNAL_PLUGINS" in result.stdout
    assert "NOT registered" in result.stdout
    assert "result: BROKEN" in result.stdout
