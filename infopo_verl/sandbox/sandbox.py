"""Run untrusted Python and get back the values of a list of calls: :class:`Sandbox` (the judge's side).

``await sandbox.run(code, calls)`` executes ``code`` as a module in a fresh process tree (:mod:`.child`), then
evaluates each call expression in that module, and returns one :class:`CallResult` per call. Deadlines are kept
here, outside the sandbox, so code that catches or blocks the in-process alarm is still stopped:

- the sandbox must say ``ready`` within ``setup_timeout_s``; loading the code and every call must each report
  within ``test_timeout_s`` + ``kill_grace_s``, else the whole process tree is killed (``killpg`` of the
  launcher's session; with namespaces, the PID namespace dies with its PID 1), the call at fault is recorded as a
  timeout and a fresh sandbox runs the remaining calls;
- all attempts of one ``run`` share ``run_timeout_s``; calls it leaves unreached are recorded as not run;
- a line longer than ``max_result_bytes``, a malformed or out-of-order message, or a value that does not decode
  fails the call it claims to be about (and ends that attempt); the judge never trusts the channel beyond that.

Concurrency: at most ``concurrency`` sandboxes run at once per event loop (the agent loop's workers run one
loop each), the bound every dialogue of a worker shares.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from infopo_verl.sandbox.values import decode

__all__ = ["Sandbox", "SandboxConfig", "CallResult", "SandboxUnavailable", "namespaces_available", "ISOLATION_KEY",
           "UID_BASE"]

logger = logging.getLogger(__name__)

CHILD = Path(__file__).with_name("child.py")
ISOLATIONS = ("namespaces", "none")
ISOLATION_KEY = "isolation"
UID_BASE = 1 << 28
"""Sandboxed code runs as a uid drawn from [UID_BASE, UID_BASE + 2**20) per run (ours: far above any real user),
so its processes are counted (``RLIMIT_NPROC``) and owned apart from everything else on the machine."""


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be built on this system; the message says which setting accepts the risk."""


@dataclasses.dataclass(frozen=True)
class SandboxConfig:
    """Limits of one sandboxed run. Defaults are ours unless marked (ColBench's own rule is 1 s per test)."""

    isolation: str = "namespaces"
    """``namespaces``: mount, PID and network namespaces plus a chroot (Linux, root). ``none``: limits, uid drop
    and a private working directory only; chosen explicitly, because it does not protect reward integrity."""
    test_timeout_s: float = 1.0
    """Wall-clock limit for loading the code and for each call (ColBench: a 1 s alarm per test)."""
    kill_grace_s: float = 0.5
    """Extra wall-clock time after ``test_timeout_s`` before the process tree is killed from outside."""
    setup_timeout_s: float = 10.0
    """Time for the sandbox to come up (a loaded 2-core machine needs well under a second)."""
    run_timeout_s: float = 30.0
    """Wall-clock limit of one ``run`` (all calls, all restarts)."""
    memory_mb: int = 1024
    """Address space (``RLIMIT_AS``) of each sandboxed process."""
    file_size_mb: int = 8
    """Largest file the code may write (``RLIMIT_FSIZE``)."""
    disk_mb: int = 32
    """Size of the sandbox's tmpfs (its whole writable file system) with namespaces."""
    processes: int = 8
    """Processes and threads of the sandbox's uid (``RLIMIT_NPROC``): a fork bomb stops here."""
    open_files: int = 64
    """Open file descriptors per process (``RLIMIT_NOFILE``)."""
    max_result_bytes: int = 1 << 20
    """Longest result line accepted; a longer value fails its call."""
    concurrency: int = dataclasses.field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)))
    """Sandboxes running at once per event loop (default: the CPU count, at most 8)."""

    def __post_init__(self):
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"sandbox {ISOLATION_KEY} must be one of {', '.join(ISOLATIONS)}, got {self.isolation!r}")
        for name in ("test_timeout_s", "kill_grace_s", "setup_timeout_s", "run_timeout_s"):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"sandbox {name} must be > 0, got {getattr(self, name)!r}")
        for name in ("memory_mb", "file_size_mb", "disk_mb", "processes", "open_files", "max_result_bytes",
                     "concurrency"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"sandbox {name} must be a positive integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class CallResult:
    """One call's outcome. ``value`` is meaningful only when ``status == "ok"``."""

    status: str
    """``ok``, ``error`` (the call raised), ``timeout``, ``load_error`` (the code itself failed), ``unsupported``
    (the value is not plain data), ``invalid`` (the channel said something malformed), ``crashed`` (the process
    tree ended early: a limit killed it, or the code did), ``not_run`` (the run's time was spent)."""
    value: Any = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@functools.cache
def namespaces_available() -> tuple[bool, str]:
    """(True, "") when this system can build the namespace sandbox, else (False, why). Probed once per process."""
    if not sys.platform.startswith("linux"):
        return False, f"namespaces are Linux-only (this is {sys.platform})"
    scratch = tempfile.mkdtemp(prefix="infopo-sandbox-probe-")
    try:
        probe = subprocess.run([sys.executable, "-I", "-S", str(CHILD), "--probe", scratch], capture_output=True,
                               text=True, env={}, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"the probe could not run ({error})"
    finally:
        os.rmdir(scratch)
    if probe.returncode != 0:
        return False, (probe.stdout.strip() or probe.stderr.strip() or f"exit {probe.returncode}")[:300]
    return True, ""


_warned_unisolated = False


def _warn_unisolated_once(setting: str) -> None:
    global _warned_unisolated
    if not _warned_unisolated:
        _warned_unisolated = True
        logger.warning(
            "sandbox: %s, so untrusted code runs WITHOUT mount, PID and network namespaces. Still enforced: "
            "wall-clock, CPU, memory, file-size, process and open-file limits, an empty environment, a fresh "
            "working directory, a session of its own%s. NOT enforced: it can read every file its uid can read "
            "(prepared data, reference code), open network connections, see other processes in /proc, and a "
            "process that leaves its session can outlive the kill.",
            setting, " and a uid of its own" if os.getuid() == 0 else "")


class Sandbox:
    """Runs untrusted code in throw-away process trees under :class:`SandboxConfig`'s limits (module docstring).

    ``isolation_setting`` names the config key that selects ``isolation``, for the messages (e.g.
    ``algorithm.infopo.env.colbench_isolation``).
    """

    def __init__(self, config: SandboxConfig | None = None, *, isolation_setting: str = ISOLATION_KEY):
        self.config = config or SandboxConfig()
        self.isolation_setting = isolation_setting
        if self.config.isolation == "namespaces":
            available, why = namespaces_available()
            if not available:
                raise SandboxUnavailable(
                    f"the code sandbox needs mount, PID and network namespaces (Linux, run as root or with "
                    f"CAP_SYS_ADMIN), which this system refuses: {why}. Without them untrusted code can read the "
                    f"reference code and the prepared data. To run anyway and accept that risk, set "
                    f"{isolation_setting}=none"
                )
        else:
            _warn_unisolated_once(f"{isolation_setting}=none")
        self._scratch = Path(tempfile.mkdtemp(prefix="infopo-sandbox-"))
        # Per-run working directories live under it and are removed after each run; it goes at close or exit.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._scratch, True)
        self._semaphores: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.stats = {"runs": 0, "attempts": 0, "kills": 0, "max_in_flight": 0}
        self._in_flight = 0

    def __repr__(self) -> str:
        return f"Sandbox(isolation={self.config.isolation!r})"

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.config.concurrency)
        return semaphore

    async def run(self, code: str, calls: Sequence[str]) -> list[CallResult]:
        """Load ``code`` as a module and evaluate every call expression in it; one result per call, in order."""
        calls = [str(call) for call in calls]
        results: list[CallResult | None] = [None] * len(calls)
        if not calls:
            return []
        deadline = time.monotonic() + self.config.run_timeout_s
        self.stats["runs"] += 1
        async with self._semaphore():
            self._in_flight += 1
            self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self._in_flight)
            try:
                start = 0
                while start < len(calls) and time.monotonic() < deadline:
                    start = await self._attempt(code, calls, start, results, deadline)
            finally:
                self._in_flight -= 1
        return [result or CallResult("not_run", detail="the run's time limit was spent") for result in results]

    async def _attempt(self, code: str, calls: list[str], start: int, results: list, deadline: float) -> int:
        """One process tree for ``calls[start:]``; fills ``results`` and returns the next call index to run."""
        config = self.config
        self.stats["attempts"] += 1
        workdir = tempfile.mkdtemp(dir=self._scratch)
        remaining = len(calls) - start
        settings = {
            "isolation": config.isolation,
            "workdir": workdir,
            "uid": UID_BASE + secrets.randbelow(1 << 20),
            "test_timeout_s": config.test_timeout_s,
            # CPU seconds for loading and every remaining call, plus one for the interpreter itself.
            "cpu_s": int(config.test_timeout_s * (remaining + 1)) + 2,
            "memory_mb": config.memory_mb,
            "file_size_mb": config.file_size_mb,
            "disk_mb": config.disk_mb,
            "processes": config.processes,
            "open_files": config.open_files,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-S", str(CHILD), json.dumps(settings),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            env={}, cwd=workdir, start_new_session=True, limit=config.max_result_bytes,
        )
        index = start
        warden: int | None = None
        try:
            setup_deadline = min(deadline, time.monotonic() + config.setup_timeout_s)
            message = await self._read(process, setup_deadline)
            if isinstance(message, dict) and message.get("kind") == "warden" and type(message.get("pid")) is int:
                warden = _open_pidfd(message["pid"])
                message = await self._read(process, setup_deadline)
            if not isinstance(message, dict) or message.get("kind") != "ready":
                detail = message.get("detail", "") if isinstance(message, dict) else ""
                raise SandboxUnavailable(f"the sandbox did not start ({detail or 'no ready message'}); "
                                         f"isolation={config.isolation}")
            process.stdin.write(json.dumps({"code": code, "calls": calls[start:]}).encode())
            await process.stdin.drain()
            process.stdin.close()
            step = config.test_timeout_s + config.kill_grace_s
            message = await self._read(process, min(deadline, time.monotonic() + step))
            if not isinstance(message, dict) or message.get("kind") not in ("loaded", "load_error"):
                reason = _reason(message, "loading the code")
                for position in range(start, len(calls)):
                    results[position] = CallResult("load_error", detail=reason)
                return len(calls)
            if message["kind"] == "load_error":
                for position in range(start, len(calls)):
                    results[position] = CallResult("load_error", detail=str(message.get("detail", ""))[:300])
                return len(calls)
            while index < len(calls):
                message = await self._read(process, min(deadline, time.monotonic() + step))
                result = _call_result(message, index - start)
                results[index] = result
                index += 1
                if result.status in ("timeout_killed", "invalid", "crashed"):
                    results[index - 1] = CallResult("timeout" if result.status == "timeout_killed" else result.status,
                                                    detail=result.detail)
                    return index  # this tree can no longer be trusted to be in step: start a fresh one
            return index
        finally:
            await self._kill(process, warden)
            shutil.rmtree(workdir, ignore_errors=True)

    async def _read(self, process, deadline: float) -> dict | str | None:
        """The next message: a dict, ``"timeout"``, ``"eof"``, ``"too_long"`` or ``"malformed"``."""
        try:
            line = await asyncio.wait_for(process.stdout.readline(), timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            return "timeout"
        except (ValueError, asyncio.LimitOverrunError):
            return "too_long"
        if not line:
            return "eof"
        try:
            message = json.loads(line)
        except (ValueError, RecursionError):
            return "malformed"
        return message if isinstance(message, dict) else "malformed"

    async def _kill(self, process, warden: int | None) -> None:
        """Kill the launcher's session and the warden, and return once the warden (with namespaces: every process
        of the sandbox) is gone."""
        try:
            os.killpg(process.pid, signal.SIGKILL)
            self.stats["kills"] += 1
        except (ProcessLookupError, PermissionError):
            pass
        try:
            await process.wait()
        except ProcessLookupError:
            pass
        if warden is None:
            return
        try:
            signal.pidfd_send_signal(warden, signal.SIGKILL)
        except ProcessLookupError:
            pass  # already exited
        loop = asyncio.get_running_loop()
        gone = loop.create_future()
        loop.add_reader(warden, lambda: gone.done() or gone.set_result(None))  # readable once it has exited
        try:
            await gone
        finally:
            loop.remove_reader(warden)
            os.close(warden)

    def close(self) -> None:
        """Remove the scratch directory (also done when the sandbox is collected or the process exits)."""
        self._cleanup()


def _open_pidfd(pid: int) -> int | None:
    """A pidfd for the warden, opened while the launcher (its parent, which reaps it only after it exits) lives."""
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):  # exited already, or a kernel without pidfd (< 5.3)
        return None


def _reason(message: Any, what: str) -> str:
    if message == "timeout":
        return f"{what} did not finish in time"
    if message == "eof":
        return f"the sandbox ended while {what}"
    return f"the sandbox sent a malformed message while {what}"


def _call_result(message: Any, expected_index: int) -> CallResult:
    """A result message for call ``expected_index`` (of this attempt) -> CallResult; anything else fails it."""
    if message == "timeout":
        return CallResult("timeout_killed", detail="no result in time: the process tree was killed")
    if message == "eof":
        return CallResult("crashed", detail="the sandbox ended before this call reported (a limit or the code)")
    if message == "too_long":
        return CallResult("invalid", detail="the result is larger than max_result_bytes")
    if not isinstance(message, dict) or message.get("kind") != "result" or message.get("index") != expected_index:
        return CallResult("invalid", detail="the sandbox sent a message out of protocol")
    status = message.get("status")
    if status == "ok":
        try:
            return CallResult("ok", value=decode(message.get("value")))
        except (ValueError, TypeError, OverflowError, RecursionError) as error:
            return CallResult("invalid", detail=f"the value does not decode: {error}"[:300])
    if status in ("error", "timeout", "unsupported"):
        return CallResult(status, detail=str(message.get("detail", ""))[:300])
    return CallResult("invalid", detail="unknown result status")
