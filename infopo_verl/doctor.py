"""``infopo-verl doctor``: is InfoPO registered with verl where training will need it?

verl loads ``verl.plugins`` entry points inside ``import verl`` and swallows their exceptions at DEBUG level, so a
broken plugin simply vanishes and training later fails with "Unknown advantage estimator". Doctor therefore:

1. checks the installed verl version against the range this plugin was verified on (SPEC section 3);
2. checks the entry point is installed and not filtered out by ``VERL_USE_EXTERNAL_PLUGINS``;
3. imports :mod:`infopo_verl.plugin` itself, printing the real traceback when it fails;
4. in a fresh Python process and inside a Ray worker, runs a bare ``import verl`` and looks each component up in
   verl's own registries;
5. says whether the ColBench judge's namespace sandbox can be built on this machine (a note, not a failure: only
   ColBench runs need it, and they stop at their first dialogue without it).

A component whose module is absent from this checkout is reported as "not built" and does not fail the check;
anything that exists but is not registered (or breaks on import) does, with the reason.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import traceback
from importlib import metadata

SUPPORTED_VERL = ((0, 9, 1), (0, 10, 0))  # [low, high): the extension surface SPEC section 3 verified
PLUGIN_MODULE = "infopo_verl.plugin"
ENTRY_POINT = "infopo"


@dataclasses.dataclass(frozen=True)
class Component:
    kind: str
    name: str
    config_key: str
    module: str


COMPONENTS = (
    Component("advantage estimator", "infopo", "algorithm.adv_estimator", "infopo_verl.estimator"),
    Component("reward manager", "infopo", "reward.reward_manager.name", "infopo_verl.reward_manager"),
    Component("agent loop", "infopo_user", "actor_rollout_ref.rollout.agent.default_agent_loop", "infopo_verl.rollout.agent_loop"),
    Component("v1 trainer mode", "infopo_sync", "trainer.v1.trainer_mode", "infopo_verl.trainer"),
)


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing too
        return False


def _registered(component: Component) -> bool:
    """Look ``component`` up in verl's own registry (verl must already be imported)."""
    if component.kind == "advantage estimator":
        from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

        return component.name in ADV_ESTIMATOR_REGISTRY
    if component.kind == "reward manager":
        from verl.experimental.reward_loop.reward_manager.registry import REWARD_MANAGER

        return component.name in REWARD_MANAGER
    if component.kind == "agent loop":
        from verl.experimental.agent_loop.agent_loop import _agent_loop_registry

        return component.name in _agent_loop_registry
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    return component.name in TRAINER_REGISTRY


def registration_report() -> dict[str, bool]:
    """In this process: a bare ``import verl``, then each component's presence in verl's registries."""
    import verl  # noqa: F401  (the import under test: it loads the verl.plugins entry points)

    return {component.kind: _registered(component) for component in COMPONENTS}


def _fresh_process_report() -> dict[str, bool]:
    probe = "import json; from infopo_verl.doctor import registration_report; print(json.dumps(registration_report()))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the probe process failed:\n{result.stderr.strip()}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _ray_worker_report() -> dict[str, bool]:
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        return ray.get(ray.remote(num_cpus=1)(registration_report).remote())
    finally:
        if started_here:
            ray.shutdown()


def _parse_version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


class _Report:
    """Collects lines and whether anything that exists is broken."""

    def __init__(self):
        self.broken = False

    def ok(self, message: str) -> None:
        print(f"  [ok]        {message}")

    def missing(self, message: str) -> None:
        print(f"  [not built] {message}")

    def note(self, message: str) -> None:
        print(f"  [note]      {message}")

    def fail(self, message: str) -> None:
        self.broken = True
        print(f"  [FAIL]      {message}")


def run_doctor(check_ray: bool = True) -> int:
    report = _Report()
    print("infopo-verl doctor")

    print("verl")
    try:
        verl_version = metadata.version("verl")
    except metadata.PackageNotFoundError:
        report.fail('verl is not installed: pip install "verl[verl-core]==0.9.1" (GPU: "verl[vllm]==0.9.1")')
        return 1
    low, high = SUPPORTED_VERL
    if low <= _parse_version(verl_version) < high:
        report.ok(f"verl {verl_version} (supported: >= {'.'.join(map(str, low))}, < {'.'.join(map(str, high))})")
    else:
        report.fail(f"verl {verl_version} is outside the supported range >= 0.9.1, < 0.10: install verl==0.9.1")

    print("plugin entry point")
    entry_points = [ep for ep in metadata.entry_points(group="verl.plugins") if ep.name == ENTRY_POINT]
    if entry_points and entry_points[0].value == PLUGIN_MODULE:
        report.ok(f"verl.plugins: {ENTRY_POINT} = {PLUGIN_MODULE}")
    else:
        report.fail(f"no verl.plugins entry point '{ENTRY_POINT}': reinstall the plugin with `pip install -e .`")
    policy = os.getenv("VERL_USE_EXTERNAL_PLUGINS", "auto").strip().lower()
    if policy == "none" or (policy != "auto" and ENTRY_POINT not in {p.strip() for p in policy.split(",")}):
        report.fail(f"VERL_USE_EXTERNAL_PLUGINS={policy!r} keeps verl from loading '{ENTRY_POINT}': unset it or add it")
    try:
        importlib.import_module(PLUGIN_MODULE)
        report.ok(f"import {PLUGIN_MODULE}")
    except Exception:  # the whole point: show what verl would have swallowed
        report.fail(f"import {PLUGIN_MODULE} raised (verl hides this at DEBUG level):\n{traceback.format_exc()}")

    built = []
    print("components")
    for component in COMPONENTS:
        label = f"{component.kind} '{component.name}' ({component.config_key}={component.name})"
        if not _module_exists(component.module):
            report.missing(f"{label}: module {component.module} is not in this checkout yet")
        else:
            built.append(component)
            report.ok(f"{label}: module {component.module}")

    processes = [("fresh process", _fresh_process_report)]
    if check_ray:
        processes.append(("Ray worker", _ray_worker_report))
    for where, probe in processes:
        print(f"registration after a bare `import verl`, {where}")
        try:
            seen = probe()
        except Exception as error:  # noqa: BLE001 - a failed probe is a finding, reported with its reason
            report.fail(f"could not run the probe: {error}")
            continue
        for component in COMPONENTS:
            label = f"{component.kind} '{component.name}'"
            if seen.get(component.kind):
                report.ok(f"{label} registered")
            elif component in built:
                report.fail(f"{label} NOT registered although {component.module} exists: see the import error above")
            else:
                report.missing(f"{label} not registered (not built)")

    print("ColBench judge sandbox (only ColBench runs need it)")
    from infopo_verl.sandbox import namespaces_available

    available, why = namespaces_available()
    if available:
        report.ok("namespace isolation (mount, PID and network namespaces, chroot) can be built here")
    else:
        report.note(
            f"namespace isolation cannot be built here ({why}): a ColBench run stops at its first dialogue; run as "
            "root (or with CAP_SYS_ADMIN) on Linux, or accept the risk with "
            "+algorithm.infopo.env.colbench_isolation=none (see docs/recipes.md)"
        )

    print("result:", "BROKEN" if report.broken else "OK")
    return 1 if report.broken else 0


def register_cli(subparsers) -> None:
    parser = subparsers.add_parser("doctor", help="check that verl sees the InfoPO components, here and in Ray")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray worker check (faster)")
    parser.set_defaults(func=lambda args: run_doctor(check_ray=not args.no_ray))
