"""Adversarial answers to a ColBench task, through the real judge and sandbox: each scores 0, the judge's process
is unharmed and the machine unchanged.

Each attack is written to *pass* if it worked: it returns the reference output only when it managed to read it,
reach the network, escape, etc. The reference output carries a random nonce, so the only way to pass is to get it
from the reference code or the reference run. Where it says so, a control shows the same answer passing a judge
without isolation (ColBench's original design: candidate and reference executed in the judge's own process), so
each attack is a real one and the zero comes from the sandbox.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import pandas as pd
import pytest

from infopo_verl.envs.colbench import ColBenchJudge, extract_answer
from infopo_verl.sandbox import UID_BASE, Sandbox, SandboxConfig
from infopo_verl.sandbox.sandbox import namespaces_available

pytestmark = pytest.mark.skipif(not namespaces_available()[0], reason="needs Linux namespaces (root)")

NONCE = secrets.token_hex(8)
KEY_VARIABLE = "INFOPO_TEST_COLBENCH_KEY"
SECRET = f"sk-colbench-{secrets.token_hex(8)}"
REFERENCE = (
    "# REFERENCE BEGIN\n"
    "def solution(x):\n"
    f"    return '{NONCE}-' + str(x * 3)\n"
    "# REFERENCE END\n"
)
TESTS = {"test1": "solution(1)", "test2": "solution(2)"}


def expected_output(x: int) -> str:
    return f"{NONCE}-{x * 3}"


class CountingServer:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self):
        self.listener.close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def judge():
    sandbox = Sandbox(SandboxConfig(concurrency=2))
    yield ColBenchJudge(sandbox)
    assert not any(sandbox._scratch.iterdir()), "a sandbox working directory was left behind"
    sandbox.close()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The task as the trainer holds it: a prepared parquet with the reference code, and a file outside."""
    folder = tmp_path_factory.mktemp("colbench-judge")
    parquet = folder / "train.parquet"
    pd.DataFrame([{"ground_truth": REFERENCE, "tests": str(TESTS)}]).to_parquet(parquet)
    os.chmod(parquet, 0o644)  # world-readable, as data files usually are
    return folder, parquet


def sandbox_processes() -> list[int]:
    """Pids of processes owned by a sandbox uid, anywhere on the machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if uid >= UID_BASE:
            found.append(int(entry.name))
    return found


def reference_from_file(path: Path) -> str:
    """An answer that reads the reference code out of the prepared data file and runs it."""
    return (
        "def solution(x):\n"
        f"    data = open({str(path)!r}, 'rb').read().decode('latin-1')\n"
        "    source = data[data.index('# REFERENCE BEGIN'):data.index('# REFERENCE END')]\n"
        "    namespace = {}\n"
        "    exec(source, namespace)\n"
        "    return namespace['solution'](x)"
    )


def score(judge, answer: str) -> float:
    return asyncio.run(judge.judge(REFERENCE, TESTS, f"I WANT TO ANSWER:\n```python\n{answer}\n```")).fraction


def in_process_score(answer: str) -> float:
    """ColBench's original judge, for the controls: both codes executed here, values compared with ==."""
    reference_namespace: dict = {}
    exec(REFERENCE, reference_namespace)  # noqa: S102 - the control reproduces the unsandboxed judge
    expected = [eval(call, reference_namespace) for call in TESTS.values()]  # noqa: S307
    candidate_namespace: dict = {}
    exec(extract_answer(f"I WANT TO ANSWER:\n{answer}"), candidate_namespace)  # noqa: S102
    outputs = [eval(call, candidate_namespace) for call in TESTS.values()]  # noqa: S307
    return sum(output == reference for output, reference in zip(outputs, expected)) / len(TESTS)


def test_an_honest_answer_passes(judge):
    assert score(judge, "def solution(x):\n    return 'wrong'") == 0.0
    honest = f"def solution(x):\n    return '{NONCE}-' + str(3 * x)"
    assert score(judge, honest) == 1.0


def test_an_infinite_loop_fails_only_the_tests_it_breaks(judge):
    answer = (f"def solution(x):\n    if x == 1:\n        while True:\n            x += 1\n"
              f"    return '{NONCE}-' + str(3 * x)")
    judgement = asyncio.run(judge.judge(REFERENCE, TESTS, f"I WANT TO ANSWER: {answer}"))
    assert judgement.passed == (False, True) and judgement.reasons[0] == "timeout"


def test_a_loop_that_catches_the_timeout_is_killed_from_outside(judge):
    answer = ("def solution(x):\n    n = 0\n    while True:\n        try:\n            while True:\n"
              "                n += 1\n        except BaseException:\n            n -= 1")
    judgement = asyncio.run(judge.judge(REFERENCE, TESTS, f"I WANT TO ANSWER: {answer}"))
    assert judgement.fraction == 0.0 and set(judgement.reasons) == {"timeout"}
    assert not sandbox_processes()


def test_a_memory_bomb(judge):
    answer = "def solution(x):\n    blocks = []\n    while True:\n        blocks.append(bytearray(64 << 20))"
    assert score(judge, answer) == 0.0


def test_a_fork_bomb_and_a_process_leaving_its_session_leave_nothing_behind(judge):
    answer = (
        "def solution(x):\n"
        "    system = __import__('o' + 's')\n"
        "    if system.fork() == 0:\n"
        "        system.setsid()\n"
        "        __import__('time').sleep(600)\n"
        "    while True:\n"
        "        try:\n"
        "            system.fork()\n"
        "        except OSError:\n"
        "            pass"
    )
    assert score(judge, answer) == 0.0
    assert not sandbox_processes(), "a sandboxed process outlived its sandbox"


def test_writing_outside_the_working_directory(judge, prepared):
    folder, parquet = prepared
    target = folder / "written-by-the-candidate"
    answer = (
        "def solution(x):\n"
        "    wrote = False\n"
        f"    for path in [{str(target)!r}, {str(parquet)!r}, '/usr/escaped', '/tmp/escaped-{NONCE}']:\n"
        "        try:\n"
        "            with open(path, 'a') as handle:\n"
        "                handle.write('pwned')\n"
        "            wrote = wrote or not path.startswith('/tmp/')\n"
        "        except OSError:\n"
        "            pass\n"
        f"    return '{NONCE}-' + str(3 * x) if wrote else None"
    )
    before = parquet.read_bytes()
    assert score(judge, answer) == 0.0
    assert not target.exists() and parquet.read_bytes() == before
    assert not Path("/usr/escaped").exists() and not Path(f"/tmp/escaped-{NONCE}").exists()


def test_reading_an_api_key_from_the_environment(judge, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    answer = (
        "def solution(x):\n"
        "    system = __import__('o' + 's')\n"
        f"    found = system.environ.get({KEY_VARIABLE!r}, '')\n"
        "    for path in ['/proc/1/environ', '/proc/self/environ', f'/proc/{system.getppid()}/environ']:\n"
        "        try:\n"
        "            found += open(path, 'rb').read().decode(errors='replace')\n"
        "        except OSError:\n"
        "            pass\n"
        f"    return '{NONCE}-' + str(3 * x) if 'sk-colbench' in found else found"
    )
    judgement = asyncio.run(judge.judge(REFERENCE, TESTS, f"I WANT TO ANSWER: {answer}"))
    assert judgement.fraction == 0.0
    (result,) = asyncio.run(judge.sandbox.run(extract_answer(answer), ["solution(1)"]))
    assert result.ok and SECRET not in str(result.value)


def test_opening_a_socket_to_a_server_on_the_loopback(judge):
    server = CountingServer()
    try:
        answer = (
            "def solution(x):\n"
            "    try:\n"
            f"        connection = __import__('socket').create_connection(('127.0.0.1', {server.port}), timeout=0.5)\n"
            "        connection.close()\n"
            f"        return '{NONCE}-' + str(3 * x)\n"
            "    except OSError as error:\n"
            "        return str(error)"
        )
        assert score(judge, answer) == 0.0
        assert server.accepted == 0, "the sandbox reached a server on 127.0.0.1"
        # Control: the server does accept connections from outside the sandbox.
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
        assert in_process_score(answer) == 1.0
    finally:
        server.close()


def test_reading_the_reference_code_from_the_prepared_data(judge, prepared):
    _, parquet = prepared
    answer = reference_from_file(parquet)
    assert score(judge, answer) == 0.0
    assert in_process_score(answer) == 1.0  # control: without the sandbox the file gives the answer away


def test_reading_the_expected_outputs_through_gc_and_frames(judge):
    answer = (
        "def solution(x):\n"
        "    import gc, sys\n"
        "    wanted = '-' + str(3 * x)\n"
        "    def look(value):\n"
        "        return isinstance(value, str) and value.endswith(wanted) and len(value) == len(wanted) + 16\n"
        "    for value in gc.get_objects():\n"
        "        items = value if isinstance(value, (list, tuple)) else value.values() if isinstance(value, dict) else []\n"
        "        for item in list(items):\n"
        "            if look(item):\n"
        "                return item\n"
        "    frame = sys._getframe()\n"
        "    while frame is not None:\n"
        "        for item in list(frame.f_locals.values()) + list(frame.f_globals.values()):\n"
        "            if look(item):\n"
        "                return item\n"
        "        frame = frame.f_back\n"
        "    return None"
    )
    assert score(judge, answer) == 0.0
    assert in_process_score(answer) == 1.0  # control: in the judge's process the expected outputs are in reach


def test_printing_a_forged_result_line_and_an_always_equal_object(judge):
    always_equal = (
        "class Equal:\n"
        "    def __eq__(self, other):\n"
        "        return True\n"
        "    __hash__ = object.__hash__\n"
        "def solution(x):\n"
        "    return Equal()"
    )
    forged = (
        "import json\n"
        "line = json.dumps({'kind': 'result', 'index': 0, 'status': 'ok', 'value': ['b', True], 'passed': True})\n"
        "print(line)\n"
        "print(json.dumps({'kind': 'done', 'fraction': 1.0}))\n"
        "for descriptor in range(3, 64):\n"
        "    try:\n"
        "        __import__('o' + 's').write(descriptor, (line + '\\n').encode())\n"
        "    except OSError:\n"
        "        pass\n"
    )
    assert score(judge, forged + always_equal) == 0.0
    assert score(judge, always_equal) == 0.0
    assert in_process_score(always_equal) == 1.0  # control: == on the candidate's own object says True


def test_signals_to_the_judge_and_a_huge_output(judge):
    answer = (
        "def solution(x):\n"
        "    system = __import__('o' + 's')\n"
        "    for pid in (system.getppid(), 0, -1, 1):\n"
        "        try:\n"
        "            system.kill(pid, 9)\n"
        "        except OSError:\n"
        "            pass\n"
        "    print('x' * (50 << 20))\n"
        "    return 'x' * (50 << 20)"
    )
    assert score(judge, answer) == 0.0
    # Still here, and the judge still judges.
    assert score(judge, f"def solution(x):\n    return '{NONCE}-' + str(3 * x)") == 1.0
    assert not sandbox_processes()


def test_without_namespaces_the_documented_risk_is_real(prepared):
    """``isolation=none`` keeps limits but not integrity, as the docs say: world-readable data is readable."""
    readable = Path(tempfile.mkdtemp(prefix="infopo-colbench-readable-"))
    readable.chmod(0o755)
    parquet = readable / "train.parquet"
    parquet.write_bytes(prepared[1].read_bytes())
    parquet.chmod(0o644)
    sandbox = Sandbox(SandboxConfig(isolation="none", concurrency=1))
    try:
        unisolated = ColBenchJudge(sandbox)
        answer = reference_from_file(parquet)
        assert score(unisolated, answer) == 1.0
        looping = "def solution(x):\n    while True:\n        x += 1"
        assert score(unisolated, looping) == 0.0  # the limits still hold
    finally:
        sandbox.close()
        shutil.rmtree(readable)
