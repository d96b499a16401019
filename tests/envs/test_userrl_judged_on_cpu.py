"""The LLM-judged UserGym families on real rows, through a real HTTP simulator on 127.0.0.1.

The only fake is the model behind the endpoint: ``play`` reads the chat our environment sent (system prompt +
quoted agent text) and answers as the user / judge would, deterministically. Everything else is real: the
converted rows, ``OpenAIUser`` over HTTP, ``ask_verdict``'s parsing and re-asking.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from testkit.openai_server import FakeOpenAIServer

from infopo_verl.config import UserSimulatorConfig
from infopo_verl.data.prepare import convert_userrl
from infopo_verl.envs.base import Action
from infopo_verl.envs.registry import environment_class
from infopo_verl.envs.userrl.travel import DB_KEY
from infopo_verl.users.base import SimulatorFailure
from infopo_verl.users.openai_chat import OpenAIUser

USERRL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "userrl"
pytestmark = pytest.mark.skipif(not USERRL.is_dir(), reason=f"UserRL data folder {USERRL} is absent")
KEY_ENV = "INFOPO_TEST_USERRL_KEY"


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """Real held-out rows (every family of the paper's test mix), converted by ``prepare`` and read back."""
    out = tmp_path_factory.mktemp("userrl")
    convert_userrl(USERRL, out, datasets=["alltest_multiturn"], progress=False, echo=lambda line: None)
    by_family: dict[str, list[dict]] = {}
    for row in pq.read_table(out / "alltest_multiturn" / "test.parquet").to_pylist():
        by_family.setdefault(row["extra_info"]["infopo"]["env"], []).append(row)
    return by_family


def task_of(row):
    return json.loads(row["extra_info"]["infopo"]["task"])


def quoted(text: str) -> str:
    """The last agent text our prompts quote between <<< and >>>."""
    return re.findall(r"<<<\n(.*?)\n>>>", text, flags=re.DOTALL)[-1]


def play(request: dict) -> str:
    """The simulator: a deterministic user / judge for every family's prompts."""
    system, prompt = request["messages"][0]["content"], request["messages"][1]["content"]
    if "judge the player's final guess" in system:  # telepathy guess
        entity = prompt.split("Secret entity: ", 1)[1].split(" - ")[0].split("\n")[0]
        return json.dumps({"correct": entity.lower() in quoted(prompt).lower()})
    if "host of a guessing game" in system or "lateral-thinking puzzle. The player" in system:
        return '```json\n{"answer": "%s"}\n```' % ("Yes" if "?" in quoted(prompt) else "Maybe")
    if "You grade a player's explanation" in system:
        points = len(re.findall(r"^\d+\. ", prompt.split("Key points:\n", 1)[1].split("\n\n")[0], flags=re.M))
        full = "everything" in quoted(prompt)
        return json.dumps({"grades": [1] * points if full else [1] + [0.5] * (points - 1)})
    if "You take part in a debate" in system:
        stance = "Strongly Disagree" if "decisive" in quoted(prompt) else "Partly Agree"
        return json.dumps({"response": "You make a point.", "stance": stance})
    if "gave an assistant a vague task" in system:
        count = len(re.findall(r"^\d+\. ", prompt.split("Details you left out:\n", 1)[1], flags=re.M))
        covered = list(range(1, count + 1)) if "all" in quoted(prompt) else [1]
        return json.dumps({"covered": covered, "reply": "Here is what I want."})
    if "You are a web search engine" in system:
        return "Snippet one.\nSnippet two."
    if "You check an answer to a quiz question" in system:
        reference = prompt.split("Reference answer: ", 1)[1].split("\n")[0]
        return json.dumps({"correct": reference.lower() in quoted(prompt).lower()})
    if "travel agent's database query" in system:
        query = quoted(prompt)
        return json.dumps({"aspect": "flight" if "flight" in query else "none"})
    if "Classify the agent's latest message" in system:
        ids = re.findall(r"^(P\d+) ", prompt.split("Your hidden preferences:\n", 1)[1], flags=re.M)
        asks = "prefer" in quoted(prompt)
        return json.dumps({"kind": "preference" if asks else "other", "preference_id": ids[0] if asks else ""})
    return "I would like an early departure."  # travel traveller speaking


@pytest.fixture
def server():
    with FakeOpenAIServer(play) as fake:
        yield fake


@pytest.fixture
def user(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")
    return OpenAIUser(UserSimulatorConfig(backend="openai", base_url=server.base_url, model="sim", api_key_env=KEY_ENV,
                                          timeout_s=5.0, max_retries=1, backoff_s=0.0))


def call(choice, content):
    return Action(content=content, choice=choice, raw=content)


async def test_telepathy_question_then_wrong_then_right_guess(rows, user):
    row = rows["telepathy"][0]
    env = environment_class("telepathy").from_row(row, user, {})
    title = task_of(row)["target_entity"].split(" - ")[0]
    answer = await env.step(call("action", "Is it man-made?"))
    assert answer.info["feedback"] == "Yes" and answer.reward == 0.0 and not answer.done
    wrong = await env.step(call("answer", "a teapot"))
    assert wrong.reward == 0.0 and not wrong.done
    right = await env.step(call("answer", title))
    assert right.done and right.reward == 1.0
    assert await env.final_score() == 1.0


async def test_turtle_reward_is_the_improvement_over_the_best_answer(rows, user):
    row = rows["turtle"][0]
    weights = [item["weight"] for item in task_of(row)["evaluation"]]
    env = environment_class("turtle").from_row(row, user, {})
    assert (await env.step(call("action", "Was someone killed?"))).info["feedback"] == "Yes"
    first = await env.step(call("answer", "A partial story."))
    partial = weights[0] + 0.5 * sum(weights[1:])
    assert first.reward == pytest.approx(partial) and not first.done
    again = await env.step(call("answer", "The same partial story."))
    assert again.reward == 0.0  # no improvement over the best so far
    full = await env.step(call("answer", "A story with everything."))
    assert full.done and full.reward == pytest.approx(1.0 - partial)
    assert await env.final_score() == pytest.approx(1.0)


async def test_persuade_pays_levels_moved_over_six(rows, user):
    env = environment_class("persuade").from_row(rows["persuade"][0], user, {})
    first = await env.step(call("answer", "Consider this."))
    assert first.reward == pytest.approx(2 / 6) and first.info["stance"] == "Partly Agree"
    assert first.info["feedback"] == "You make a point."
    same = await env.step(call("answer", "And this."))
    assert same.reward == 0.0
    last = await env.step(call("action", "A decisive argument."))
    assert last.done and last.reward == pytest.approx(4 / 6)
    assert await env.final_score() == pytest.approx(1.0)


async def test_intention_rewards_by_importance_with_the_multi_detail_penalty(rows, user):
    row = rows["intention"][0]
    details = task_of(row)["missing_details"]
    env = environment_class("intention").from_row(row, user, {})
    first = await env.step(call("action", "What cuisine do you like?"))
    expected_first = {3: 1.0, 2: 0.7, 1: 0.4}[int(details[0]["importance"])]
    assert first.reward == pytest.approx(expected_first) and first.info["covered"] == [details[0]["description"]]
    rest = await env.step(call("action", "Tell me all the rest."))
    top = max(int(d["importance"]) for d in details[1:])
    expected_rest = max(0.0, {3: 1.0, 2: 0.7, 1: 0.4}[top] - 0.2 * (len(details) - 2))
    assert rest.done and rest.reward == pytest.approx(expected_rest)
    assert await env.final_score() == pytest.approx(expected_first + expected_rest)


async def test_search_serves_results_and_judges_answers(rows, user):
    row = rows["search"][0]
    env = environment_class("search").from_row(row, user, {})
    results = await env.step(call("search", "first hop"))
    assert results.info["feedback"] == "Search results:\nSnippet one.\nSnippet two."
    assert not (await env.step(call("answer", "nobody"))).done
    right = await env.step(call("answer", task_of(row)["answer"]))
    assert right.done and await env.final_score() == 1.0


def fake_travel_db(tmp_path: Path, row: dict) -> Path:
    """A stand-in for TravelGym's database (not shipped): one record for ``row``'s real id and best options."""
    task = task_of(row)
    record = {"scenario": "A trip.", "dimensions": task["aspects"], "arguments": {}, "all_options": {},
              "preferences": {}}
    initials = {"flight": "F", "apartment": "A", "rental_car": "C", "hotel": "H", "restaurant": "R"}
    for aspect in task["aspects"]:
        best = next(option for option in task["best_options"] if option[0] == initials[aspect])
        record["preferences"][aspect] = {"best_id": best, "correct_ids": [best, f"{best[0]}999"],
                                         "preferences": [[aspect, "time", f"{aspect} in the morning", "hint"]]}
        record["arguments"][aspect] = {"destination": "Bali"}
        record["all_options"][aspect] = [{"id": best}, {"id": f"{best[0]}999"}]
    (tmp_path / "travelgym_data_test.json").write_text(json.dumps({task["id"]: record}))
    return tmp_path


async def test_travel_whole_dialogue_with_a_database(rows, user, tmp_path):
    row = next(r for r in rows["travel"] if task_of(r)["aspects"][0] == "flight" and len(task_of(r)["aspects"]) >= 2)
    task = task_of(row)
    env = environment_class("travel").from_row(row, user, {"travel_db_path": str(fake_travel_db(tmp_path, row))})
    searched = await env.step(call("search", "flight from Tokyo to Bali"))
    assert searched.info["search"] == "flight" and "all options for flight" in searched.info["feedback"]
    repeat = await env.step(call("search", "flight again"))
    assert repeat.info.get("repeat") is True
    miss = await env.step(call("search", "something else"))
    assert miss.info["search"] is None
    asked = await env.step(call("action", "Which departure time do you prefer?"))
    assert asked.reward == pytest.approx(0.8) and asked.info["feedback"] == "I would like an early departure."
    chat = await env.step(call("action", "Nice weather, isn't it?"))
    assert chat.reward == 0.0 and chat.info["kind"] == "other"
    assert "exactly one" in (await env.step(call("answer", "F1, F2"))).info["feedback"]
    best_flight = next(o for o in task["best_options"] if o[0] == "F")
    best = await env.step(call("answer", best_flight))
    assert best.reward == 1.0 and not best.done
    assert "already recommended" in (await env.step(call("answer", "F999"))).info["feedback"]
    initials = {"apartment": "A", "rental_car": "C", "hotel": "H", "restaurant": "R"}
    others = task["aspects"][1:]
    for index, aspect in enumerate(others):
        acceptable = await env.step(call("answer", f"{initials[aspect]}999"))
        assert acceptable.reward == pytest.approx(0.8) and acceptable.done == (index == len(others) - 1)
    assert await env.final_score() == pytest.approx(0.8 + 1.0 + 0.8 * len(others))


def test_travel_without_its_database_names_the_config_key(rows, user, tmp_path):
    row = rows["travel"][0]
    with pytest.raises(ValueError, match=re.escape(DB_KEY)):
        environment_class("travel").from_row(row, user, {})
    with pytest.raises(ValueError, match="does not exist"):
        environment_class("travel").from_row(row, user, {"travel_db_path": str(tmp_path / "missing")})
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="is not in the database"):
        environment_class("travel").from_row(row, user, {"travel_db_path": str(tmp_path)})


@pytest.mark.parametrize("family", ["telepathy", "turtle", "persuade", "intention", "search", "travel"])
def test_scripted_backend_is_refused_with_the_config_key(rows, family):
    with pytest.raises(ValueError, match=r"algorithm\.infopo\.user\.backend=openai or policy"):
        environment_class(family).from_row(rows[family][0], None, {"travel_db_path": "unused"})


def test_tau_rows_stop_with_how_to_install(rows):
    with pytest.raises(ValueError, match="pip install git\\+https://github.com/sierra-research/tau-bench"):
        environment_class("tau").from_row(rows["tau"][0], None, {})


async def test_malformed_verdicts_are_retried_then_fail(rows, server, user):
    env = environment_class("telepathy").from_row(rows["telepathy"][0], user, {})
    server.responder = lambda request: "Yes, I think so."  # never a JSON verdict
    with pytest.raises(SimulatorFailure, match="malformed verdict after 3 attempts"):
        await env.step(call("action", "Is it big?"))
    assert len(server.requests) == 3


async def test_a_verdict_off_the_scale_is_reasked_then_fails(rows, server, user):
    env = environment_class("persuade").from_row(rows["persuade"][0], user, {})
    server.responder = lambda request: '{"response": "Hm.", "stance": "Somewhat convinced"}'
    with pytest.raises(SimulatorFailure, match="invalid verdict after 3 attempts: 'stance' must be one of"):
        await env.step(call("answer", "Consider this."))
    corrections = server.requests[-1]["messages"]
    assert corrections[-1]["role"] == "user" and "not valid" in corrections[-1]["content"]
    assert await env.final_score() == 0.0


async def test_http_faults_end_as_simulator_failure(rows, server, user):
    env = environment_class("turtle").from_row(rows["turtle"][0], user, {})
    server.mode = "http500"
    with pytest.raises(SimulatorFailure):
        await env.step(call("answer", "A story."))
    server.mode = "ok"
    server.script(["http500"])  # one fault, then the retry succeeds
    assert (await env.step(call("action", "Was it night?"))).info["feedback"] == "Yes"
