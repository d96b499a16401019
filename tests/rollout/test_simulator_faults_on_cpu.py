"""User-simulator faults, end to end: the clarify requester is played by an OpenAI-compatible model behind a real
HTTP server on 127.0.0.1 (``FakeOpenAIServer``) and the dialogues run through verl's AgentLoopWorker and a Ray
RewardLoopWorker. A simulator that times out, answers 500 or sends malformed JSON ends its dialogues with the
failure recorded and a zero outcome; the step never crashes and no reply is invented. Unless
``algorithm.infopo.train_on_failures``, such a dialogue carries no loss: its response_mask is all zero."""

from __future__ import annotations

import pytest
from testkit.openai_server import FakeOpenAIServer
from testkit.tiny import tiny_model_path

from infopo_verl.envs.clarify import generate_rows
from infopo_verl.local.pipeline import run_dialogues
from infopo_verl.rollout.actions import parse_action
from infopo_verl.rollout.record import RolloutRecord

KEY_VARIABLE = "INFOPO_TEST_SIMULATOR_KEY"
SECRET = "sk-test-never-logged-0123456789"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_path(tmp_path_factory.mktemp("tiny"))


def overrides(server: FakeOpenAIServer) -> list[str]:
    return [
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.rollout.prompt_length=512",
        "data.max_prompt_length=512",
        "actor_rollout_ref.rollout.response_length=120",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=3",
        "algorithm.infopo.max_tokens_per_turn=12",
        "algorithm.infopo.user.backend=openai",
        f"algorithm.infopo.user.base_url={server.base_url}",
        f"algorithm.infopo.user.api_key_env={KEY_VARIABLE}",
        "algorithm.infopo.user.timeout_s=0.5",
        "algorithm.infopo.user.max_retries=1",
        "algorithm.infopo.user.backoff_s=0.0",
    ]


def records(batch):
    return [RolloutRecord.from_batch(batch.non_tensor_batch, row) for row in range(len(batch))]


def test_a_working_simulator_plays_the_requester(model_dir, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    with FakeOpenAIServer(lambda request: "The cuisine is thai.") as server:
        _, batch = run_dialogues(model_dir, generate_rows(2, seed=5, split="test"), overrides(server))
    asked = [text for record in records(batch) for text in record.feedback_texts if text is not None]
    assert asked and all(text == "The cuisine is thai." for text in asked)
    # The simulator saw the hidden details in its system prompt and the agent's question as its user turn.
    questions = {parse_action(text).content for record in records(batch) for text in record.agent_texts}
    for request in server.requests:
        system, last = request["messages"][0], request["messages"][-1]
        assert system["role"] == "system" and "Never volunteer" in system["content"] and " = " in system["content"]
        assert last["role"] == "user" and last["content"] in questions
    assert all(record.simulator_failure is None for record in records(batch))


@pytest.mark.parametrize(
    ("mode", "reason"), [("hang", "timed out"), ("http500", "500"), ("malformed_json", "")], ids=str
)
def test_simulator_faults_end_dialogues_with_the_failure_recorded(model_dir, monkeypatch, caplog, mode, reason):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    with FakeOpenAIServer(lambda request: "The cuisine is thai.") as server:
        server.mode = mode
        _, batch = run_dialogues(model_dir, generate_rows(2, seed=5, split="test"), overrides(server))
        attempts = len(server.requests) if mode != "hang" else None
    assert len(batch) == 4  # every dialogue came back, none crashed the step
    failed = [record for record in records(batch) if record.simulator_failure is not None]
    # A dialogue reaches the user unless its first turn already gave an answer; every one that did, failed.
    reached = [record for record in records(batch) if record.env_steps and record.ended_by != "done"]
    assert failed and len(failed) == len(reached)
    for record in failed:
        assert record.ended_by == "simulator_failure"
        assert reason in record.simulator_failure
        assert SECRET not in record.simulator_failure
        assert record.feedback_texts[-1] is None  # nothing invented in place of the missing reply
        assert record.env_score is None
    for row, record in enumerate(records(batch)):
        if record.simulator_failure is not None:
            assert batch.non_tensor_batch["simulator_failed"][row] == 1.0
            assert batch.non_tensor_batch["outcome"][row] == 0.0
            assert float(batch.batch["rm_scores"][row].sum()) == 0.0
            assert not record.trained and int(batch.batch["response_mask"][row].sum()) == 0
    if attempts is not None:
        assert attempts == 2 * len(failed)  # first attempt + max_retries=1, per failed dialogue
    assert SECRET not in caplog.text


def answers_only_the_first_question(request: dict) -> str:
    """A simulator that answers once per dialogue, then breaks: its second request in a chat raises (HTTP 500)."""
    if sum(message["role"] == "user" for message in request["messages"]) > 1:
        raise RuntimeError("the simulator broke in the middle of the dialogue")
    return "The cuisine is thai."


def mid_dialogue_failures(model_dir, extra_overrides):
    with FakeOpenAIServer(answers_only_the_first_question) as server:
        _, batch = run_dialogues(
            model_dir, generate_rows(2, seed=5, split="test"),
            [*overrides(server), "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=4", *extra_overrides],
        )
    failed = [row for row, record in enumerate(records(batch))
              if record.simulator_failure is not None and record.feedback_texts[0] is not None]
    assert failed, "no dialogue got a reply and then lost its simulator: the test would prove nothing"
    return batch, failed


def test_a_simulator_failing_mid_dialogue_leaves_that_row_without_loss(model_dir, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    batch, failed = mid_dialogue_failures(model_dir, [])
    for row, record in enumerate(records(batch)):
        mask = batch.batch["response_mask"][row]
        if row in failed:
            assert int(mask.sum()) == 0 and not record.trained and record.ended_by == "simulator_failure"
            assert record.turn_rewards == [] and float(batch.batch["rm_scores"][row].abs().sum()) == 0.0
            assert len(record.turn_spans) >= 2  # the dialogue itself is still recorded, turn by turn
        elif record.simulator_failure is None:
            assert int(mask.sum()) > 0 and record.trained


def test_train_on_failures_keeps_the_failed_rows_in_training(model_dir, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    batch, failed = mid_dialogue_failures(model_dir, ["algorithm.infopo.train_on_failures=true"])
    for row in failed:
        record = records(batch)[row]
        mask = batch.batch["response_mask"][row].tolist()
        assert record.trained and batch.non_tensor_batch["outcome"][row] == 0.0
        # The turns before the failure are trained as recorded; the one that received the reply is scored.
        ones = [position for position, value in enumerate(mask) if value]
        assert ones == [p for start, end in record.turn_spans for p in range(start, end + 1)]
        assert record.info_gain[0] is not None and record.turn_rewards[0][0] == record.turn_spans[0][1]
