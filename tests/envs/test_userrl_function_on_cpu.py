"""FunctionGym on real rows: deterministic rules, a whole dialogue to a score, the safe rule interpreter."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from infopo_verl.data.prepare import convert_userrl
from infopo_verl.envs.base import Action
from infopo_verl.envs.registry import environment_class
from infopo_verl.envs.userrl.function import FunctionEnv, evaluate_rule

USERRL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "userrl"
pytestmark = pytest.mark.skipif(not USERRL.is_dir(), reason=f"UserRL data folder {USERRL} is absent")


@pytest.fixture(scope="module")
def function_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("userrl")
    convert_userrl(USERRL, out, datasets=["function_multiturn"], progress=False, echo=lambda line: None)
    return pq.read_table(out / "function_multiturn" / "test.parquet").to_pylist()


def task_of(row):
    return json.loads(row["extra_info"]["infopo"]["task"])


def call(choice, content):
    return Action(content=content, choice=choice, raw=f"{choice}: {content}")


async def test_whole_dialogue_on_a_real_row_scores_one(function_rows):
    row = function_rows[0]
    task = task_of(row)
    env = environment_class("function").from_row(row, None, {})
    assert isinstance(env, FunctionEnv)

    probe = await env.step(call("action", "1 2 3 4"))
    expected_probe = round(evaluate_rule(task["rule"], [1, 2, 3, 4]), 4)
    assert not probe.done and probe.reward == 0.0
    assert probe.info["feedback"].startswith("For numbers [1, 2, 3, 4], the result is")
    assert float(probe.info["feedback"].rsplit(" ", 1)[1].rstrip(".")) == pytest.approx(expected_probe)
    assert probe.feedback.endswith("\nReward: 0.0")  # UserRL shows the step reward after the feedback

    test_case = await env.step(call("search", "test"))
    shown = json.loads(test_case.info["feedback"].removeprefix("Test case: "))
    assert shown == task["test_case"]

    refused = await env.step(call("action", " ".join(str(int(x)) for x in task["test_case"])))
    assert "not revealed" in refused.info["feedback"]

    wrong = await env.step(call("answer", str(task["expected_result"] + 5)))
    assert not wrong.done and wrong.reward == 0.0 and wrong.info["correct"] is False

    right = await env.step(call("answer", f"{task['expected_result']:.2f}"))
    assert right.done and right.reward == 1.0 and right.feedback == ""
    assert await env.final_score() == 1.0
    after = await env.step(call("answer", "0"))
    assert after.done and await env.final_score() == 1.0


async def test_every_real_function_is_evaluable_and_matches_its_expected_result(function_rows):
    for row in function_rows:
        task = task_of(row)
        assert evaluate_rule(task["rule"], task["test_case"]) == pytest.approx(task["expected_result"], abs=1e-6)


async def test_no_answer_scores_zero_and_bad_actions_are_explained(function_rows):
    env = FunctionEnv.from_row(function_rows[1], None, {"show_step_reward": False})
    plain = await env.step(Action(content="I think it's 4", raw="I think it's 4"))
    assert "interact_with_env" in plain.feedback and not plain.done
    bad = await env.step(Action(content="", raw="<tool_call>{", parse_error="the tool call is not valid JSON"))
    assert "could not be read" in bad.feedback
    wrong_choice = await env.step(call("finish", ""))
    assert "not available" in wrong_choice.feedback
    three = await env.step(call("action", "1 2 3"))
    assert three.feedback == "Please give exactly four numbers (got 3)."
    not_test = await env.step(call("search", "rule please"))
    assert "exactly 'test'" in not_test.feedback
    word = await env.step(call("answer", "forty"))
    assert word.feedback == "The answer must be a single number."
    # Only the malformed calls are the environment's own errors; the task's rules are information.
    assert plain.env_error and bad.env_error and wrong_choice.env_error
    assert not (three.env_error or not_test.env_error or word.env_error)
    assert await env.final_score() == 0.0


def test_rule_interpreter_refuses_anything_but_arithmetic():
    assert evaluate_rule("(a + b) * c - d ** 2", [1, 2, 3, 4]) == -7.0
    for rule in ("__import__('os').system('true')", "a.real", "[a][0]", "a if b else c", "e"):
        with pytest.raises(ValueError):
            evaluate_rule(rule, [1, 2, 3, 4])
    with pytest.raises(ValueError, match="too large"):
        evaluate_rule("a ** b", [10, 1000, 0, 0])
    assert evaluate_rule("c ** d ** b ** a", [3, 3, 1, 10]) == 1.0  # a real tower of powers (func-76)
    with pytest.raises(ZeroDivisionError):
        evaluate_rule("a / b", [1, 0, 0, 0])


async def test_division_by_zero_probe_is_reported_not_raised():
    row = {"extra_info": {"infopo": {"env": "function", "task": json.dumps(
        {"rule": "a / b", "test_case": [4, 2, 1, 1], "expected_result": 2.0})}}}
    env = FunctionEnv.from_row(row, None, {})
    result = await env.step(call("action", "1 0 3 4"))
    assert "cannot be evaluated" in result.info["feedback"] and not result.done


@pytest.mark.parametrize(
    "task, message",
    [
        ({"test_case": [1, 2, 3, 4], "expected_result": 1.0}, "extra_info.infopo.task.rule is missing"),
        ({"rule": "a+b", "test_case": [1, 2], "expected_result": 1.0}, "test_case must be four numbers"),
        ({"rule": "a+b", "test_case": [1, 2, 3, 4], "expected_result": "3"}, "expected_result of a function row"),
        ({"rule": "open(a)", "test_case": [1, 2, 3, 4], "expected_result": 3.0}, "cannot be evaluated"),
    ],
)
def test_malformed_function_rows_name_the_field(task, message):
    row = {"extra_info": {"infopo": {"env": "function", "task": json.dumps(task)}}}
    with pytest.raises(ValueError, match=message):
        FunctionEnv.from_row(row, None, {})


def test_row_of_another_family_or_bad_json_is_refused():
    with pytest.raises(ValueError, match="expected 'function'"):
        FunctionEnv.from_row({"extra_info": {"infopo": {"env": "turtle", "task": "{}"}}}, None, {})
    with pytest.raises(ValueError, match="not valid JSON"):
        FunctionEnv.from_row({"extra_info": {"infopo": {"env": "function", "task": "{oops"}}}, None, {})
    with pytest.raises(ValueError, match="show_step_reward"):
        FunctionEnv("a", [1, 2, 3, 4], 1.0, {"show_step_reward": "yes"})
