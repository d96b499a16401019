"""A sandbox for untrusted Python (model-written code, benchmark reference code): run a module, get call values.

Used by the ColBench judge (:mod:`infopo_verl.envs.colbench`), usable by anything that must execute code it does
not trust and score what comes back::

    sandbox = Sandbox(SandboxConfig())
    results = await sandbox.run("def f(x):\\n    return x * 2\\n", ["f(2)", "f('a')"])
    results[0].value == 4

Threat model: reward integrity. The code may try to read what it is scored against (the reference code, the
expected outputs, the judge's state), forge its result, damage the trainer or the machine, or reach the network.

What holds with ``isolation=namespaces`` (Linux, root or CAP_SYS_ADMIN; the default, refused where unavailable):

- nothing but the code itself is in its process: the reference code runs in another sandbox, expected outputs
  and verdicts stay in the judge's process, which the code cannot see (PID namespace, no ``/proc``) nor signal;
- its file system is a fresh tmpfs (``/work``, ``/tmp``; size-capped) plus read-only system and interpreter
  directories: the checkout, the prepared parquet, data, ``/etc``, ``/root`` and ``/proc`` are absent;
- no network: a network namespace with no interface up (loopback included); an IPC namespace of its own (no
  host shared memory, semaphores or message queues);
- an empty environment (no API keys), a uid of its own (so ``RLIMIT_NPROC`` caps a fork bomb, which root would
  ignore; no access to root-owned files), ``no_new_privs``; limits on wall clock (per call and per run, kept by
  the judge from outside), CPU, address space, file size, processes and open files;
- every process it starts dies with the sandbox: killing the PID namespace's init kills them all, ``setsid`` or not;
- results are plain data on a pipe, parsed by ``json.loads`` and rebuilt into builtins (never ``pickle``, never
  ``eval``), capped in size, depth and hashed items; the judge compares values itself, so the most a forged line
  can claim is a value.

What holds with ``isolation=none`` (chosen explicitly; a warning says so once per process): the limits, the empty
environment, the private working directory, the kill of the session and, as root, the uid of its own. What does
not: the code can read any file its uid can read (world-readable prepared data holds the reference code), connect
to the network, list processes in ``/proc``, and a process that leaves the session can outlive the kill.
Reward integrity is then not protected: use it only for code you trust.

Departure from ColBench's judge, which executes the candidate in its own process under a 1 s alarm with no
isolation: values cross processes as plain data, so only builtin values (and ``Decimal``, ``Fraction``, naive
``datetime`` types) can be compared; a value of another type fails its test (:mod:`.child` lists the types).
"""

from infopo_verl.sandbox.sandbox import (
    UID_BASE,
    CallResult,
    Sandbox,
    SandboxConfig,
    SandboxUnavailable,
    namespaces_available,
)

__all__ = ["Sandbox", "SandboxConfig", "CallResult", "SandboxUnavailable", "namespaces_available", "UID_BASE"]
