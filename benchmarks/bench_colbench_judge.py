"""Throughput of the sandboxed ColBench judge: dialogues judged per second, 10 tests each.

A training step of the paper's ColBench run judges 64 prompts x 5 rollouts = 320 dialogues. This script judges
that many synthetic answers (64 tasks with 10 tests each; per task five answers: right, right but slow to load,
partly wrong, raising, and one that does not compile) through :class:`~infopo_verl.envs.colbench.ColBenchJudge`
with the default sandbox (namespaces, 1 s per test), ``--concurrency`` sandboxes at once, and prints dialogues per
second and the time of one such step. Reference outputs are computed once per task (the judge caches them), as in
training; the first line reports that warm-up apart.

For scale it also times ColBench's original design on the same answers, both codes executed in this process with
no isolation at all (only safe because the code here is ours), and prints the ratio.

    .venv/bin/python benchmarks/bench_colbench_judge.py [--tasks 64] [--rollouts 5] [--concurrency 2]

It prints; it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from infopo_verl.envs.colbench import ColBenchJudge
from infopo_verl.sandbox import Sandbox, SandboxConfig

TESTS_PER_TASK = 10


def task(index: int) -> tuple[str, dict[str, str], list[str]]:
    """(reference code, test cases, five answers) of synthetic task ``index``."""
    name = f"score_{index}"
    reference = (
        "import math\n\n"
        f"def _weight(x):\n    return (x % {index + 3}) + 1\n\n"
        f"def {name}(values, scale=2):\n"
        "    total = sum(_weight(v) * v for v in values)\n"
        "    return {'total': total * scale, 'root': round(math.sqrt(abs(total)), 3), 'count': len(values)}\n"
    )
    tests = {f"test{k}": f"{name}({list(range(k, k + 5))!r}, {k % 3 + 1})" for k in range(TESTS_PER_TASK)}
    right = reference.replace("_weight", "_w")
    slow = "import time\ntime.sleep(0.05)\n" + right
    partly = right.replace("* scale", "* (scale if scale != 2 else 3)")
    raising = f"def {name}(values, scale=2):\n    raise ValueError('not yet')\n"
    broken = f"def {name}(values, scale=2)\n    return 0\n"
    answers = [f"I WANT TO ANSWER:\n```python\n{code}```" for code in (right, slow, partly, raising, broken)]
    return reference, tests, answers


def in_process(reference: str, tests: dict[str, str], answer: str) -> float:
    """ColBench's original judge: both codes executed here, compared with ==."""
    expected_namespace: dict = {}
    exec(reference, expected_namespace)  # noqa: S102 - our own synthetic code
    expected = [eval(call, expected_namespace) for call in tests.values()]  # noqa: S307
    namespace: dict = {}
    try:
        exec(answer.split("```python\n", 1)[1].rsplit("```", 1)[0], namespace)  # noqa: S102
    except SyntaxError:
        return 0.0
    passed = 0
    for call, reference_value in zip(tests.values(), expected):
        try:
            passed += eval(call, namespace) == reference_value  # noqa: S307
        except Exception:  # noqa: BLE001
            pass
    return passed / len(tests)


async def judge_all(judge: ColBenchJudge, work: list[tuple[str, dict[str, str], str]]) -> list[float]:
    judgements = await asyncio.gather(*(judge.judge(reference, tests, answer) for reference, tests, answer in work))
    return [judgement.fraction for judgement in judgements]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--rollouts", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=2, help="sandboxes at once (default: 2, for 2 cores)")
    args = parser.parse_args()

    tasks = [task(index) for index in range(args.tasks)]
    work = [(reference, tests, answers[rollout % len(answers)])
            for reference, tests, answers in tasks for rollout in range(args.rollouts)]
    sandbox = Sandbox(SandboxConfig(concurrency=args.concurrency))
    judge = ColBenchJudge(sandbox)
    try:
        start = time.perf_counter()
        asyncio.run(_references(judge, tasks))
        warm_up = time.perf_counter() - start
        start = time.perf_counter()
        scores = asyncio.run(judge_all(judge, work))
        elapsed = time.perf_counter() - start
    finally:
        sandbox.close()
    start = time.perf_counter()
    oracle = [in_process(reference, tests, answer) for reference, tests, answer in work]
    unsandboxed = time.perf_counter() - start
    agree = sum(abs(a - b) < 1e-9 for a, b in zip(scores, oracle))

    rate = len(work) / elapsed
    print(f"machine: {os.cpu_count()} cores; sandbox concurrency {args.concurrency}; {TESTS_PER_TASK} tests per "
          f"dialogue; isolation {sandbox.config.isolation}")
    print(f"reference outputs of {len(tasks)} tasks (once per task, cached): {warm_up:.2f} s")
    print(f"judged {len(work)} dialogues in {elapsed:.2f} s: {rate:.1f} dialogues/s "
          f"({rate * TESTS_PER_TASK:.0f} tests/s)")
    print(f"a step of 320 dialogues x {TESTS_PER_TASK} tests: {320 / rate:.1f} s of judging")
    print(f"ColBench's unsandboxed in-process judge on the same answers: {unsandboxed:.2f} s "
          f"(sandboxed / in-process: {elapsed / max(unsandboxed, 1e-9):.0f}x)")
    print(f"scores equal to the in-process judge's: {agree} of {len(work)}; mean score {sum(scores) / len(scores):.3f}")


async def _references(judge: ColBenchJudge, tasks) -> None:
    await asyncio.gather(*(judge.reference(reference, list(tests.values())) for reference, tests, _ in tasks))


if __name__ == "__main__":
    main()
