"""The sandbox's child side: a standard-library-only script, started as ``python -I -S child.py <mode>``.

It never runs inside the judge's process and imports nothing from the project (``-I -S``: no site-packages, no
user paths, no environment variables read). Three processes, from the judge outwards:

1. the **launcher** (this script's ``main``, root when the judge is root, in a new session so one ``killpg`` ends
   it): with ``isolation=namespaces`` it enters new mount, network and IPC namespaces and a new PID namespace for
   its child, mounts a size-limited tmpfs over the fresh working directory the judge made, and forks;
2. the **warden**, PID 1 of the new PID namespace (killing it tears the whole namespace down, whatever its other
   processes did: ``setsid``, double forks). It builds the root file system inside that tmpfs (read-only binds of
   the interpreter and system libraries, ``/dev/null``, empty ``/work`` and ``/tmp``; no ``/proc``, no ``/etc``,
   no project files, no data), ``chroot``s into it and forks the runner; it dies with the launcher
   (``PR_SET_PDEATHSIG``) and is never seen by the runner's uid;
3. the **runner**: drops to an unprivileged uid of its own (so ``RLIMIT_NPROC`` counts only its processes; root
   ignores that limit), sets the resource limits, sends ``ready``, reads the job from stdin, executes the code as
   a module and evaluates each call, sending one line per call on the result channel.

The result channel is the launcher's stdout, duplicated to a private descriptor before the code runs; the code's
own stdout and stderr go to ``/dev/null``. Values are sent as *plain data* (:func:`encode`): a JSON tree of tagged
builtins, which the judge rebuilds into fresh builtins (``infopo_verl.sandbox.values.decode``) and compares itself.
The code can write anything to the channel, but all it can claim is a value: verdicts are never sent, and values
of other types (an object whose ``__eq__`` always says True) cannot be expressed.

With ``isolation=none`` the launcher skips the namespaces and the chroot; limits, the uid drop (as root), the empty
environment and the private working directory still apply (what that leaves open is listed in
``infopo_verl/sandbox/__init__.py``).
"""

import ctypes
import json
import os
import resource
import signal
import sys
import types

# Linux constants (linux/sched.h, linux/mount.h, linux/prctl.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38

SYSTEM_PATHS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")
"""Read-only in the sandbox (with the interpreter's own prefix): what a stdlib-only Python needs to start."""
MAX_DEPTH = 64
"""Nesting depth of a value beyond which it is not sent (ours; deeper values fail their test)."""


# ----------------------------------------------------------------------------------------------- plain data


def encode(value, depth=0):
    """``value`` as a JSON tree of tagged builtins; raises TypeError for anything else.

    Tags: ``n`` None, ``b`` bool, ``i`` int (hex text: no digit limit), ``f`` float (repr text: exact, nan/inf),
    ``c`` complex, ``s`` str, ``y`` bytes (hex), ``l`` list, ``t`` tuple, ``d`` dict (key/value pairs), ``S`` set,
    ``F`` frozenset, ``D`` Decimal, ``Q`` Fraction, ``date``/``time``/``datetime``/``timedelta`` (naive only).
    Subclasses of the containers and scalars (namedtuple, OrderedDict, defaultdict, Counter, IntEnum) are read
    through the base type's own methods and sent as that base type.
    """
    if depth > MAX_DEPTH:
        raise TypeError(f"value nested deeper than {MAX_DEPTH}")
    kind = type(value)
    if value is None:
        return ["n"]
    if kind is bool:
        return ["b", value]
    if isinstance(value, int) and not isinstance(value, bool):
        return ["i", int.__format__(value, "x")]
    if isinstance(value, float):
        return ["f", float.__repr__(value)]
    if isinstance(value, complex):
        return ["c", float.__repr__(value.real), float.__repr__(value.imag)]
    if isinstance(value, str):
        return ["s", str.__str__(value)]
    if isinstance(value, (bytes, bytearray)):
        return ["y", bytes(value).hex()]
    if isinstance(value, dict):
        return ["d", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in dict.items(value)]]
    if isinstance(value, tuple):
        return ["t", [encode(item, depth + 1) for item in tuple.__iter__(value)]]
    if isinstance(value, list):
        return ["l", [encode(item, depth + 1) for item in list.__iter__(value)]]
    if isinstance(value, frozenset):
        return ["F", [encode(item, depth + 1) for item in frozenset.__iter__(value)]]
    if isinstance(value, set):
        return ["S", [encode(item, depth + 1) for item in set.__iter__(value)]]
    # Imported on first use: most values need none of these, and the sandbox starts faster without them.
    module = getattr(kind, "__module__", "")
    if module == "decimal":
        import decimal

        if kind is decimal.Decimal:
            return ["D", decimal.Decimal.__str__(value)]
    if module == "fractions":
        import fractions

        if kind is fractions.Fraction:
            return ["Q", int.__format__(value.numerator, "x"), int.__format__(value.denominator, "x")]
    if module == "datetime":
        import datetime

        if kind is datetime.datetime and value.tzinfo is None:
            return ["datetime", value.isoformat()]
        if kind is datetime.date:
            return ["date", value.isoformat()]
        if kind is datetime.time and value.tzinfo is None:
            return ["time", value.isoformat()]
        if kind is datetime.timedelta:
            return ["timedelta", value.days, value.seconds, value.microseconds]
    raise TypeError(f"a {kind.__name__} is not plain data")


# ------------------------------------------------------------------------------------------------ the runner


class _TestTimeout(BaseException):
    """Raised in the code by the per-test alarm (a BaseException, so ``except Exception`` does not swallow it)."""


def _on_alarm(signum, frame):
    raise _TestTimeout()


def _short(error):
    text = f"{type(error).__name__}: {error}"
    return text[:300]


def run_job(channel, timeout):
    """Read the job (JSON on stdin: ``code``, ``calls``), run it with ``timeout`` seconds for loading the code and
    for each call, and write one JSON line per event to ``channel`` (a file descriptor)."""

    def send(message):
        data = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            written = os.write(channel, view)
            view = view[written:]

    job = json.loads(sys.stdin.buffer.read().decode())
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    signal.signal(signal.SIGALRM, _on_alarm)

    def timed(function):
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return function()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    module = types.ModuleType("solution")
    sys.modules["solution"] = module
    code = job["code"]
    try:
        compiled = compile(code, "solution.py", "exec")
        timed(lambda: exec(compiled, module.__dict__))  # noqa: S102 - the sandbox exists to run this
    except _TestTimeout:
        send({"kind": "load_error", "detail": f"loading the code took more than {timeout:g}s"})
        return
    except BaseException as error:  # noqa: BLE001 - any failure of the code is its result
        send({"kind": "load_error", "detail": _short(error)})
        return
    send({"kind": "loaded"})
    for index, call in enumerate(job["calls"]):
        try:
            value = timed(lambda: eval(compile(call, "test", "eval"), module.__dict__))  # noqa: S307
        except _TestTimeout:
            send({"kind": "result", "index": index, "status": "timeout"})
            continue
        except BaseException as error:  # noqa: BLE001
            send({"kind": "result", "index": index, "status": "error", "detail": _short(error)})
            continue
        try:
            encoded = encode(value)
        except (TypeError, RecursionError, ValueError) as error:
            send({"kind": "result", "index": index, "status": "unsupported", "detail": _short(error)})
            continue
        send({"kind": "result", "index": index, "status": "ok", "value": encoded})
    send({"kind": "done"})


# ------------------------------------------------------------------------------------ launcher and warden


_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None):
    encode_ = lambda text: text.encode() if text is not None else None  # noqa: E731
    _check(_c().mount(encode_(source), encode_(target), encode_(fstype), ctypes.c_ulong(flags), encode_(data)),
           f"mount {target}")


def _bind_read_only(source, target):
    os.makedirs(target, exist_ok=True)
    _mount(source, target, None, MS_BIND | MS_REC)
    _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _build_root(root, uid):
    """The sandbox's file system inside the tmpfs at ``root`` (already mounted)."""
    bound = []
    for path in sorted({*SYSTEM_PATHS, sys.base_prefix, sys.base_exec_prefix}):
        if not os.path.lexists(path) or any(path.startswith(done + "/") for done in bound):
            continue  # absent, or already visible through a directory bound above it
        target = root + path
        if os.path.islink(path):  # merged-/usr systems: /lib -> usr/lib
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(os.readlink(path), target)
        else:
            _bind_read_only(path, target)
            bound.append(path)
    os.makedirs(root + "/dev", exist_ok=True)
    for device in ("null", "zero", "urandom"):
        target = f"{root}/dev/{device}"
        open(target, "w").close()  # noqa: SIM115 - a mount point
        _mount(f"/dev/{device}", target, None, MS_BIND)
    for writable, mode in (("/work", 0o700), ("/tmp", 0o1777)):
        os.makedirs(root + writable, exist_ok=True)
        os.chmod(root + writable, mode)
    os.chown(root + "/work", uid, uid)


def _limits(job):
    for limit, value in (
        (resource.RLIMIT_CPU, int(job["cpu_s"])),
        (resource.RLIMIT_AS, int(job["memory_mb"]) << 20),
        (resource.RLIMIT_FSIZE, int(job["file_size_mb"]) << 20),
        (resource.RLIMIT_NOFILE, int(job["open_files"])),
        (resource.RLIMIT_NPROC, int(job["processes"])),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))


def _runner(settings, channel):
    """Last step before the code runs: unprivileged uid, limits, ``ready``, then the job."""
    uid = int(settings["uid"])
    try:
        if os.getuid() == 0:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        _check(_c().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
        _limits(settings)
    except (OSError, ValueError) as error:  # before any untrusted code: the judge reports it as a setup failure
        os.write(channel, (json.dumps({"kind": "setup_error", "detail": _short(error)}) + "\n").encode())
        return
    os.write(channel, b'{"kind":"ready"}\n')
    run_job(channel, float(settings["test_timeout_s"]))


def main():
    settings = json.loads(sys.argv[1])
    workdir = settings["workdir"]
    channel = os.dup(1)
    try:
        if settings["isolation"] == "namespaces":
            _check(_c().unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC), "unshare")
            _mount("none", "/", None, MS_REC | MS_PRIVATE)
            _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV,
                   f"size={int(settings['disk_mb'])}m,mode=0755")
    except OSError as error:
        os.write(channel, (json.dumps({"kind": "setup_error", "detail": str(error)}) + "\n").encode())
        return 3
    go_read, go_write = os.pipe()
    warden = os.fork()
    if warden == 0:
        code = 0
        try:
            _c().prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            os.close(go_write)
            os.read(go_read, 1)  # the launcher has announced this process: only now may anything else be said
            os.close(go_read)
            uid = int(settings["uid"])
            if settings["isolation"] == "namespaces":
                _build_root(workdir, uid)
                os.chroot(workdir)
                os.chdir("/work")
            else:
                os.chdir(workdir)
                if os.getuid() == 0:
                    os.chown(workdir, uid, uid)
            runner = os.fork()
            if runner == 0:
                try:
                    _runner(settings, channel)
                finally:
                    os._exit(0)
            os.close(channel)
            os.waitpid(runner, 0)
        except BaseException as error:  # noqa: BLE001 - reported, then this process ends
            try:
                os.write(channel, (json.dumps({"kind": "setup_error", "detail": _short(error)}) + "\n").encode())
            except OSError:
                pass
            code = 3
        os._exit(code)
    # The judge waits for this process to be gone after its kill: with a PID namespace that means every process
    # of the sandbox is gone (the namespace's init exits only after all the others).
    os.write(channel, (json.dumps({"kind": "warden", "pid": warden}) + "\n").encode())
    os.close(channel)
    os.write(go_write, b"x")
    os.close(go_write)
    os.waitpid(warden, 0)
    return 0


def probe():
    """Exit 0 when this system can build the namespace sandbox, else print why and exit 1."""
    try:
        _check(_c().unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC), "unshare")
        _mount("none", "/", None, MS_REC | MS_PRIVATE)
        _mount("tmpfs", sys.argv[2], "tmpfs", MS_NOSUID | MS_NODEV, "size=1m")
        pid = os.fork()
        if pid == 0:
            os.chroot(sys.argv[2])
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise OSError("chroot failed in the new namespaces")
    except (OSError, AttributeError) as error:
        print(str(error))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(probe() if sys.argv[1] == "--probe" else main())
