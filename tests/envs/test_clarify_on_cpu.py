"""The built-in clarify task: scripted replies, answer parsing and scoring, row validation, row generation."""

import json

import pandas as pd
import pytest

from infopo_verl.envs.base import Action
from infopo_verl.envs.clarify import (
    DONT_KNOW,
    SLOTS,
    ClarifyEnv,
    format_answer,
    generate_rows,
    parse_answer,
)
from infopo_verl.envs.registry import environment_class


def make_row(slots, **infopo):
    return {
        "extra_info": {
            "index": 0,
            "split": "test",
            "infopo": {"env": "clarify", "slots": json.dumps(slots), "request": "Book a table for me.", **infopo},
        }
    }


RESTAURANT = {"cuisine": "thai", "day": "friday", "time": "7pm", "guests": "four"}


@pytest.fixture
def env():
    return ClarifyEnv.from_row(make_row(RESTAURANT), None, {})


def test_registry_resolves_clarify():
    assert environment_class("clarify") is ClarifyEnv


async def test_question_naming_one_slot_gets_that_value(env):
    result = await env.step(Action(content="What cuisine would you like?"))
    assert result.feedback == "The cuisine is thai."
    assert not result.done
    assert result.info["asked_slots"] == ["cuisine"]


async def test_keywords_and_plurals_count_as_asking(env):
    assert (await env.step(Action(content="How many people are coming?"))).feedback == "The number of guests is four."
    assert (await env.step(Action(content="What kind of FOOD?"))).feedback == "The cuisine is thai."
    assert (await env.step(Action(content="Which days work?"))).feedback == "The day is friday."


async def test_several_slots_are_answered_in_task_order(env):
    result = await env.step(Action(content="What time and which day, and how many guests?"))
    assert result.feedback == "The day is friday. The time is 7pm. The number of guests is four."
    assert result.info["asked_slots"] == ["day", "time", "guests"]


async def test_question_naming_no_known_slot_gets_dont_know(env):
    assert (await env.step(Action(content="Can you tell me more?"))).feedback == DONT_KNOW
    # a slot of another task is not a slot of this one
    assert (await env.step(Action(content="What is your budget?"))).feedback == DONT_KNOW
    # keywords match whole words only: "sunday" does not ask for the day
    assert (await env.step(Action(content="Is sunday fine?"))).feedback == DONT_KNOW


@pytest.mark.parametrize("source", ["options", "row"])
async def test_uninformative_user_never_tells(source):
    row = make_row(RESTAURANT, uninformative=source == "row")
    env = ClarifyEnv.from_row(row, None, {"uninformative": True} if source == "options" else {})
    for question in ("What cuisine?", "What day and time?", "How many guests?"):
        assert (await env.step(Action(content=question))).feedback == DONT_KNOW


async def test_full_answer_scores_one_and_ends_the_dialogue(env):
    result = await env.step(Action(content=f"Thanks! {format_answer(RESTAURANT)}"))
    assert result.done and result.feedback == ""
    assert result.info["score"] == 1.0 and result.info["correct_slots"] == list(RESTAURANT)
    assert await env.final_score() == 1.0
    again = await env.step(Action(content="What cuisine?"))
    assert again.done and again.feedback == ""


async def test_partial_answer_scores_share_of_slots(env):
    result = await env.step(Action(content="answer: Cuisine = THAI, day=monday; room=alpha."))
    assert result.done
    assert result.info["answer"] == {"cuisine": "thai", "day": "monday", "room": "alpha"}
    assert result.info["unknown_slots"] == ["room"]
    assert await env.final_score() == pytest.approx(0.25)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("ANSWER: thai friday", "not key=value"),
        ("ANSWER:", "no key=value pairs"),
        ("ANSWER: cuisine=", "empty key or value"),
        ("ANSWER: cuisine=thai; cuisine=indian", "two values"),
    ],
)
async def test_unparseable_answer_scores_zero_with_reason(env, text, reason):
    result = await env.step(Action(content=text))
    assert result.done
    assert reason in result.info["answer_error"]
    assert await env.final_score() == 0.0


async def test_tool_call_answer_without_marker(env):
    result = await env.step(Action(content="cuisine=thai; day=friday; time=7pm; guests=four", choice="answer"))
    assert result.done and result.info["score"] == 1.0


async def test_unreadable_tool_call_is_reported_and_dialogue_goes_on(env):
    result = await env.step(Action(content="", parse_error="arguments are not JSON"))
    assert not result.done and "arguments are not JSON" in result.feedback
    assert result.env_error  # the environment's own message, not the user's information
    assert await env.final_score() == 0.0
    question = await env.step(Action(content="What cuisine would you like?"))
    assert not question.env_error


def test_parse_answer_reads_only_the_answer_line():
    assert parse_answer("Let me see.\nANSWER: day=friday\nThat's all.") == {"day": "friday"}


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda row: row.pop("extra_info"), "extra_info.infopo.env"),
        (lambda row: row["extra_info"]["infopo"].pop("slots"), "extra_info.infopo.slots"),
        (lambda row: row["extra_info"]["infopo"].update(env="travel"), "extra_info.infopo.env"),
        (lambda row: row["extra_info"]["infopo"].update(slots="{not json"), "extra_info.infopo.slots"),
        (lambda row: row["extra_info"]["infopo"].update(slots="{}"), "extra_info.infopo.slots"),
        (lambda row: row["extra_info"]["infopo"].update(slots='{"Day Of": "x"}'), "extra_info.infopo.slots"),
        (lambda row: row["extra_info"]["infopo"].update(slots='{"day": "a;b"}'), "extra_info.infopo.slots.day"),
        (lambda row: row["extra_info"]["infopo"].update(request=3), "extra_info.infopo.request"),
        (lambda row: row["extra_info"]["infopo"].update(uninformative="yes"), "extra_info.infopo.uninformative"),
    ],
)
def test_malformed_rows_name_the_field(mutate, field):
    row = make_row(RESTAURANT)
    mutate(row)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        ClarifyEnv.from_row(row, None, {})


def test_bad_option_names_the_config_key():
    with pytest.raises(ValueError, match=r"algorithm\.infopo\.env\.uninformative"):
        ClarifyEnv.from_row(make_row(RESTAURANT), None, {"uninformative": 1})


def test_generate_rows_is_deterministic_by_seed_and_split():
    assert generate_rows(20, seed=3, split="train") == generate_rows(20, seed=3, split="train")
    assert generate_rows(20, seed=3, split="train") != generate_rows(20, seed=4, split="train")
    assert generate_rows(20, seed=3, split="train") != generate_rows(20, seed=3, split="test")


def test_generated_rows_are_valid_verl_rows():
    rows = generate_rows(50, seed=0, split="train")
    for index, row in enumerate(rows):
        assert row["data_source"] == "infopo_clarify" and row["agent_name"] == "infopo_user"
        assert [message["role"] for message in row["prompt"]] == ["system", "user"]
        assert "ANSWER:" in row["prompt"][0]["content"]
        assert row["reward_model"]["style"] == "rule"
        assert row["extra_info"]["index"] == index and row["extra_info"]["split"] == "train"
        slots = json.loads(row["reward_model"]["ground_truth"])
        assert 2 <= len(slots) <= 4
        assert all(value in SLOTS[name].values for name, value in slots.items())
        # the system prompt names every field the answer needs
        assert all(name in row["prompt"][0]["content"] for name in slots)
        env = ClarifyEnv.from_row(row, None, {})
        assert env.slots == slots and env.request == row["prompt"][1]["content"]
    assert len({row["extra_info"]["infopo"]["task"] for row in rows}) > 1


async def test_rows_survive_a_parquet_round_trip(tmp_path):
    rows = generate_rows(10, seed=1, split="test", uninformative=True)
    pd.DataFrame(rows).to_parquet(tmp_path / "clarify.parquet")
    loaded = pd.read_parquet(tmp_path / "clarify.parquet").to_dict("records")
    for original, row in zip(rows, loaded):
        env = ClarifyEnv.from_row(row, None, {})
        assert env.slots == json.loads(original["reward_model"]["ground_truth"])
        assert env.uninformative
        assert (await env.step(Action(content=f"What {next(iter(env.slots))}?"))).feedback == DONT_KNOW
