"""ColBench end to end on CPU, and its parts.

Synthetic tasks of the real row format (``testkit.colbench``) go through ``prepare colbench``, verl's
``RLHFDataset``, verl's ``AgentLoopWorker`` running the ``infopo_user`` loop and a Ray ``RewardLoopWorker``. Two
things stand in for what a CPU cannot do: the agent's turns are scripted text (``testkit.scripted_agent``; a tiny
model cannot write code; scoring still runs on the real tiny model and tokenizer), and the user simulator is an
OpenAI-compatible server on 127.0.0.1 whose "model" checks it was given the hidden information. The reward must
equal the fraction an independent in-process oracle computes.
"""

from __future__ import annotations

import asyncio
import json

import pandas as pd
import pyarrow.parquet as pq
import pytest
from testkit.colbench import TASKS, in_process_fraction, write_jsonl
from testkit.openai_server import FakeOpenAIServer
from testkit.scripted_agent import ScriptedAgentServer
from testkit.tiny import tiny_model_path
from verl.trainer.ppo.metric_utils import process_validation_metrics

from infopo_verl.data.colbench import convert_colbench
from infopo_verl.envs.base import Action, TASK_METRIC_KEYS
from infopo_verl.envs.clarify import generate_rows
from infopo_verl.envs.colbench import (
    ANSWER_MARKER,
    DATA_SOURCE,
    MAX_TURNS,
    REPLY_CHARS,
    ColBenchEnv,
    blacklisted,
    extract_answer,
)
from infopo_verl.local.pipeline import LocalPipeline, compose_config, load_batch
from infopo_verl.local.server import LocalLLMServer
from infopo_verl.sandbox.sandbox import namespaces_available

KEY_VARIABLE = "INFOPO_TEST_COLBENCH_SIMULATOR_KEY"
CLARIFY_KEY = "You help a user with a vague request"
LONG_REPLY = "The default is fifteen percent and it rounds half up to cents. " * 10  # over 400 characters
needs_namespaces = pytest.mark.skipif(not namespaces_available()[0], reason="needs Linux namespaces (root)")


def function_name(task: dict) -> str:
    return next(iter(task["test_cases"].values())).split("(")[0]


def simulate(request: dict) -> str:
    """The user simulator: it must have been told the hidden information; answers from it, sometimes too long."""
    system = request["messages"][0]["content"]
    task = next((task for task in TASKS if task["hidden_information"] in system), None)
    if task is None:
        return "I was not told anything."  # the test below fails on this reply
    if function_name(task) == "tip_total":
        return LONG_REPLY
    return f"It is {function_name(task)}, as in my notes."


# ---------------------------------------------------------------------------------------------- the parts


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        ("I WANT TO ANSWER:\n```python\ndef f():\n    return 1\n```\nDone.", "def f():\n    return 1"),
        ("Sure. I WANT TO ANSWER: def f(): return 1", "def f(): return 1"),
        ("```\ndef f():\n    return 2\n```", "def f():\n    return 2"),  # no marker: the whole reply is the answer
        ("I WANT TO ANSWER:\ndef f():\n    return 3\n", "def f():\n    return 3"),
    ],
)
def test_extract_answer(reply, code):
    assert extract_answer(reply) == code


def test_the_blacklist_is_a_substring_test_on_the_reply():
    assert blacklisted("I WANT TO ANSWER: import os\ndef f(): pass") == "import os"
    assert blacklisted("use sys.exit(1) if needed") == "exit("
    assert blacklisted("I WANT TO ANSWER: def f(): return 1") is None


def colbench_row(task: dict) -> dict:
    fields = {key: task[key] for key in ("problem_description", "hidden_information", "ground_truth", "test_cases")}
    return {"extra_info": {"infopo": {"env": "colbench", "task": json.dumps(fields)}}}


def test_rows_and_options_are_checked_with_their_field_named():
    task = dict(TASKS[0])
    with pytest.raises(ValueError, match="needs a user simulator"):
        ColBenchEnv.from_row(colbench_row(task), None, {})
    broken = {**task, "test_cases": {"t": 5}}
    with pytest.raises(ValueError, match=r"test_cases\.t"):
        ColBenchEnv.from_row(colbench_row(broken), object(), {})
    with pytest.raises(ValueError, match="colbench_isolaton"):
        ColBenchEnv.from_row(colbench_row(task), object(), {"colbench_isolaton": "none"})
    with pytest.raises(ValueError, match="isolation"):
        ColBenchEnv.from_row(colbench_row(task), object(), {"colbench_isolation": "chroot"})


class CountingUser:
    name = "counting"

    def __init__(self):
        self.chats = []

    async def reply(self, messages):
        self.chats.append(messages)
        return "x" * 1000


@needs_namespaces
def test_the_environment_ends_itself_at_colbench_s_turn_limit_and_judges_the_last_reply():
    task = TASKS[3]
    user = CountingUser()
    env = ColBenchEnv.from_row(colbench_row(task), user, {})

    async def dialogue():
        steps = [await env.step(Action(content=f"question {turn}")) for turn in range(MAX_TURNS - 1)]
        last = await env.step(Action(content=task["replies"][-1]))
        return steps, last, await env.final_score()

    steps, last, score = asyncio.run(dialogue())
    assert all(not step.done and len(step.feedback) == REPLY_CHARS for step in steps)
    assert last.done and len(user.chats) == MAX_TURNS - 1  # no simulator call for the reply that ends it
    assert score == pytest.approx(in_process_fraction(task, task["replies"][-1]))
    assert env.task_metrics() == {"pass": pytest.approx(score), "succ": 0.0}


# -------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_path(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """The synthetic tasks through ``prepare colbench`` (what a run reads), plus one clarify row."""
    folder = tmp_path_factory.mktemp("colbench")
    write_jsonl(folder / "source", TASKS, TASKS[:1])
    convert_colbench(folder / "source", folder / "out", echo=lambda line: None)
    colbench = pq.read_table(folder / "out" / "train.parquet").to_pylist()
    assert len(colbench) == len(TASKS)
    return colbench + generate_rows(1, seed=0, split="test")


@pytest.fixture(scope="module")
def end_to_end(model_dir, rows, tmp_path_factory):
    scripts = {function_name(task): task["replies"] for task in TASKS}
    scripts[CLARIFY_KEY] = ["ANSWER: cuisine = thai"]
    data_file = tmp_path_factory.mktemp("rows") / "rows.parquet"
    pd.DataFrame(rows).to_parquet(data_file)
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv(KEY_VARIABLE, "sk-test")
    with FakeOpenAIServer(simulate) as simulator:
        config = compose_config(model_dir, [
            # One dialogue per task (the reward is what is checked); InfoPO's estimator refuses groups of one.
            "actor_rollout_ref.rollout.n=1",
            "algorithm.adv_estimator=grpo",
            "actor_rollout_ref.rollout.prompt_length=1536",
            "data.max_prompt_length=1536",
            "actor_rollout_ref.rollout.response_length=2560",
            "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2",
            "algorithm.infopo.max_tokens_per_turn=1024",
            "actor_rollout_ref.rollout.temperature=0.6",
            "algorithm.infopo.user.backend=openai",
            f"algorithm.infopo.user.base_url={simulator.base_url}",
            f"algorithm.infopo.user.api_key_env={KEY_VARIABLE}",
            "algorithm.infopo.user.temperature=0.0",
            "algorithm.infopo.user.max_retries=0",
        ])
        server = ScriptedAgentServer(LocalLLMServer(model_dir, max_model_len=4096, seed=3), scripts)
        pipeline = LocalPipeline(config, server)
        try:
            batch = pipeline.advantages(pipeline.rollout(load_batch(config, [data_file], pipeline.tokenizer)))
        finally:
            pipeline.close()
            monkeypatch.undo()
        requests = simulator.requests
    return batch, requests, server


@needs_namespaces
def test_reward_is_the_fraction_of_tests_passed(end_to_end):
    batch, _, _ = end_to_end
    seen = set()
    for row in range(len(batch)):
        record = batch.non_tensor_batch["infopo"][row]
        if record.family != "colbench":
            continue
        task = next(task for task in TASKS if task["replies"][0] == record.agent_texts[0])
        seen.add(function_name(task))
        expected = in_process_fraction(task, task["replies"][-1])
        assert record.agent_texts == task["replies"]  # the scripted turns went through the real tokenizer
        assert record.env_score == pytest.approx(expected)
        assert batch.non_tensor_batch["outcome"][row] == pytest.approx(expected)
        assert batch.non_tensor_batch["pass"][row] == pytest.approx(expected)
        assert batch.non_tensor_batch["succ"][row] == float(expected == 1.0)
        answered = ANSWER_MARKER in task["replies"][-1]
        assert record.ended_by == ("done" if answered else "max_turns")
    assert seen == {function_name(task) for task in TASKS}
    # Expected values, so the oracle itself is pinned: several tests, a None reference, a list for a tuple.
    assert [in_process_fraction(task, task["replies"][-1]) for task in TASKS] == pytest.approx([0.6, 1 / 3, 0.5, 2 / 3, 1.0])


@needs_namespaces
def test_the_simulator_sees_the_hidden_information_and_its_reply_is_cut(end_to_end):
    batch, requests, _ = end_to_end
    colbench = [request for request in requests if "hidden information" in request["messages"][0]["content"]]
    # One per question of the three two-turn dialogues, and one for the unmarked last reply of the dialogue the
    # loop's limit (2 here) ends: only ColBench's own limit (10, the recipes' setting) is known to the environment.
    assert len(colbench) == 4
    for request in colbench:
        system = request["messages"][0]["content"]
        assert any(task["hidden_information"] in system and task["problem_description"] in system for task in TASKS)
        assert request["messages"][-1]["role"] == "user" and request["temperature"] == 0.0
    feedback = [text for row in range(len(batch)) for text in batch.non_tensor_batch["infopo"][row].feedback_texts
                if text]
    assert LONG_REPLY[:REPLY_CHARS] in feedback and all(len(text) <= REPLY_CHARS for text in feedback)
    assert "I was not told anything." not in feedback


@needs_namespaces
def test_pass_and_succ_reach_verls_validation_metrics_for_a_mixed_batch(end_to_end):
    batch, _, _ = end_to_end
    sources = list(batch.non_tensor_batch["data_source"])
    assert set(sources) == {DATA_SOURCE, "infopo_clarify"}
    infos = {key: list(batch.non_tensor_batch[key]) for key in TASK_METRIC_KEYS}
    clarify_rows = [row for row, source in enumerate(sources) if source == "infopo_clarify"]
    assert all(infos["pass"][row] is None for row in clarify_rows)  # same key, no value for another family
    metrics = process_validation_metrics(sources, list(batch.non_tensor_batch["uid"]), infos)
    expected = [in_process_fraction(task, task["replies"][-1]) for task in TASKS]
    assert metrics[DATA_SOURCE]["pass"]["mean@1"] == pytest.approx(sum(expected) / len(expected))
    assert metrics[DATA_SOURCE]["succ"]["mean@1"] == pytest.approx(1 / len(TASKS))
    assert "pass" not in metrics.get("infopo_clarify", {})
