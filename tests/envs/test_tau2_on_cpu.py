"""tau2-bench end to end on CPU: tau2's gym (mock domain) through verl's AgentLoopWorker and a Ray RewardLoopWorker,
the customer played by an OpenAI-compatible model behind a real HTTP server on 127.0.0.1 (``FakeOpenAIServer``).

The tiny CPU model cannot do a customer-service task, so the agent's turns come from a script at the inference
server boundary (``ScriptedAgentServer``); the tokenizer, its chat template (which renders the tools), the agent
loop, tau2's orchestrator, database and evaluator, and the r_t measurement by the real tiny model are all real.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import threading
from pathlib import Path

import pandas as pd
import pytest
from testkit.openai_server import FakeOpenAIServer
from testkit.scripted_agent import ScriptedAgentServer
from testkit.tiny import tiny_model_path

from infopo_verl.data.tau2 import tau2_rows
from infopo_verl.local.pipeline import LocalPipeline, compose_config, load_batch
from infopo_verl.local.server import LocalLLMServer

KEY_VARIABLE = "INFOPO_TEST_TAU2_KEY"
SECRET = "sk-test-tau2-never-logged-0123"
TASK_ID = "create_task_1"  # mock domain: create the task 'Important Meeting' for user_1 (DB + communicate reward)

ASKS_FOR_TASK = "Hi, please create a task called 'Important Meeting' for user_1."
VAGUE_OPENING = "Hello, I need some help with my to-do list."
CUSTOMER_DONE = "No, that is all. Thank you!"


def call(name: str, **arguments) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


# The agent's turns per dialogue, chosen by the customer's opening (in the prompt).
PLANS = {
    ASKS_FOR_TASK: [
        call("create_task", user_id="user_1", title="Important Meeting"),
        "I created the task 'Important Meeting' for you. Is there anything else?",
        call("done"),
    ],
    VAGUE_OPENING: [
        "Sure. What would you like to do with it?",
        call("done"),
    ],
}


class Customer:
    """Responder of the fake endpoint: the first opening asks for the task, the second is vague; then polite."""

    def __init__(self, openings: list[str]):
        self.openings = list(openings)
        self.lock = threading.Lock()

    def __call__(self, request: dict) -> str:
        messages = request["messages"]
        if len(messages) == 2:  # tau2's system prompt and the agent's greeting: the customer opens
            with self.lock:
                return self.openings.pop(0)
        return CUSTOMER_DONE


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_path(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def mock_row():
    (row,) = [row for row in tau2_rows("mock", "base") if row["extra_info"]["infopo"]["task_id"] == TASK_ID]
    return row


def overrides(server: FakeOpenAIServer, n: int, extra: list[str] = ()) -> list[str]:
    return [
        f"actor_rollout_ref.rollout.n={n}",
        "actor_rollout_ref.rollout.prompt_length=4096",
        "data.max_prompt_length=4096",
        "actor_rollout_ref.rollout.response_length=1024",
        "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=6",
        "algorithm.infopo.max_tokens_per_turn=256",
        "algorithm.infopo.user.backend=openai",
        f"algorithm.infopo.user.base_url={server.base_url}",
        f"algorithm.infopo.user.api_key_env={KEY_VARIABLE}",
        "algorithm.infopo.user.timeout_s=0.5",
        "algorithm.infopo.user.max_retries=1",
        "algorithm.infopo.user.backoff_s=0.0",
        *extra,
    ]


# One dialogue is what a fault test needs; InfoPO's estimator refuses groups of one (rollout.n >= 2), verl's GRPO
# takes them, and the rollout and its record are the same under either estimator.
SINGLE_DIALOGUE = ["algorithm.adv_estimator=grpo"]


def roll_out(model_dir: str, row: dict, config_overrides: list[str]):
    config = compose_config(model_dir, config_overrides)
    rollout = config.actor_rollout_ref.rollout
    scorer = LocalLLMServer(model_dir, max_model_len=int(rollout.prompt_length + rollout.response_length))
    server = ScriptedAgentServer(scorer, PLANS)
    with tempfile.TemporaryDirectory() as scratch:
        data_file = Path(scratch) / "rows.parquet"
        pd.DataFrame([row]).to_parquet(data_file)
        pipeline = LocalPipeline(config, server)
        try:
            batch = pipeline.advantages(pipeline.rollout(load_batch(config, [data_file], pipeline.tokenizer)))
        finally:
            pipeline.close()
    return batch, pipeline.tokenizer


def records(batch):
    return [batch.non_tensor_batch["infopo"][row] for row in range(len(batch))]


def test_required_actions_earn_reward_1_and_feedback_is_measured(model_dir, mock_row, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    with FakeOpenAIServer(Customer([ASKS_FOR_TASK, VAGUE_OPENING])) as server:
        batch, tokenizer = roll_out(model_dir, mock_row, overrides(server, n=2))
        requests = server.requests
    by_plan = {}
    for row, record in enumerate(records(batch)):
        prompt = tokenizer.decode(batch.batch["prompts"][row], skip_special_tokens=False)
        plan = ASKS_FOR_TASK if ASKS_FOR_TASK in prompt else VAGUE_OPENING
        by_plan[plan] = (row, record, prompt)
    assert set(by_plan) == {ASKS_FOR_TASK, VAGUE_OPENING}

    for row, record, prompt in by_plan.values():
        # The domain's tool schemas (and the gym's `done`) are in the prompt ids, rendered by the chat template.
        assert "<tools>" in prompt and '"create_task"' in prompt and '"done"' in prompt
        assert "Mock Domain Policy" in prompt and "Hi! How can I help you today?" in prompt
        assert record.family == "tau2" and record.simulator_failure is None
        assert record.ended_by == "done"

    row, done, _ = by_plan[ASKS_FOR_TASK]
    assert done.env_score == 1.0 and batch.non_tensor_batch["outcome"][row] == 1.0
    response = batch.batch["responses"][row]
    mask = batch.batch["response_mask"][row]
    tool_span, reply_span = done.feedback_spans[0], done.feedback_spans[1]
    tool_text = tokenizer.decode(response[tool_span[0] : tool_span[1] + 1])
    reply_text = tokenizer.decode(response[reply_span[0] : reply_span[1] + 1])
    # o_0 is the tool result (a tool message), o_1 the customer's reply (a user message); both are feedback.
    assert "<tool_response>" in tool_text and '"title": "Important Meeting"' in tool_text
    assert CUSTOMER_DONE in reply_text and "<tool_response>" not in reply_text
    for start, end in (tool_span, reply_span):
        assert int(mask[start : end + 1].sum()) == 0
    assert all(isinstance(value, float) for value in done.info_gain[:2]) and done.info_gain[2] is None
    assert done.feedback_texts[1] == CUSTOMER_DONE

    row, skipped, _ = by_plan[VAGUE_OPENING]
    assert skipped.env_score == 0.0 and batch.non_tensor_batch["outcome"][row] == 0.0  # nothing was created
    assert isinstance(skipped.info_gain[0], float)

    # The customer saw tau2's own prompt (guidelines and the task's scenario), never the agent's tool calls.
    system = requests[0]["messages"][0]
    assert system["role"] == "system" and "Important Meeting" in system["content"]
    assert all("create_task" not in message["content"] for request in requests for message in request["messages"][1:])
    assert all(SECRET not in json.dumps(dataclasses.asdict(record)) for record in records(batch))


@pytest.mark.parametrize(
    ("mode", "extra", "reason"),
    [
        ("hang", [], "timed out after 0.5s"),
        ("http500", [], "HTTP 500"),
        ("empty_content", [], "empty reply"),
        # The per-step deadline, with a customer whose own timeout is longer.
        ("hang", ["algorithm.infopo.user.timeout_s=60", "+algorithm.infopo.env.tau2_step_timeout_s=1"],
         "tau2_step_timeout_s"),
    ],
    ids=["customer-timeout", "http500", "empty", "step-timeout"],
)
def test_customer_faults_mid_dialogue_end_it_as_a_recorded_failure(model_dir, mock_row, monkeypatch, mode, extra,
                                                                  reason):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    with FakeOpenAIServer(Customer([ASKS_FOR_TASK])) as server:
        server.script(["ok"])  # the opening works; the fault comes after the agent's tool call
        server.mode = mode
        batch, _ = roll_out(model_dir, mock_row, overrides(server, n=1, extra=[*SINGLE_DIALOGUE, *extra]))
    (record,) = records(batch)
    assert record.ended_by == "simulator_failure"
    assert reason in record.simulator_failure and SECRET not in record.simulator_failure
    assert record.env_steps == 2  # the tool call went through; the customer failed on the second turn
    assert record.feedback_spans[0] is not None and record.feedback_texts[-1] is None  # nothing invented
    assert record.env_score is None  # never the gym's reward 0
    assert int(batch.batch["response_mask"][0].sum()) == 0  # a customer fault carries no loss
    assert batch.non_tensor_batch["simulator_failed"][0] == 1.0


def test_a_customer_that_cannot_open_the_dialogue_is_a_recorded_failure(model_dir, mock_row, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    with FakeOpenAIServer(Customer([ASKS_FOR_TASK])) as server:
        server.mode = "http500"
        batch, _ = roll_out(model_dir, mock_row, overrides(server, n=1, extra=SINGLE_DIALOGUE))
    (record,) = records(batch)
    assert record.ended_by == "simulator_failure" and "HTTP 500" in record.simulator_failure
    assert record.turn_spans == [] and record.env_score is None
    assert int(batch.batch["response_mask"][0].sum()) == 0  # no agent turn: nothing to train on
    assert batch.non_tensor_batch["simulator_failed"][0] == 1.0


# ------------------------------------------------------------------------------ the environment on its own

def test_the_customer_uses_its_device_tools_through_tool_call_text(monkeypatch):
    """telecom: the customer acts on its phone (tau2's user tools) with <tool_call> text; the result comes back to it
    as <tool_response> text, and the agent only sees the customer's words."""
    from infopo_verl.config import UserSimulatorConfig
    from infopo_verl.data.tau2 import tau2_rows
    from infopo_verl.envs.base import Action
    from infopo_verl.envs.tau2 import Tau2Env
    from infopo_verl.users.openai_chat import OpenAIUser

    def customer(request: dict) -> str:
        last = request["messages"][-1]["content"]
        if len(request["messages"]) == 2:
            return "My phone cannot send picture messages."
        if "<tool_response>" in last:
            return "The status bar says: " + last.split("\n")[1][:60]
        return call("check_status_bar")

    monkeypatch.setenv(KEY_VARIABLE, SECRET)
    row = tau2_rows("telecom", "train")[0]
    with FakeOpenAIServer(customer) as server:
        user = OpenAIUser(UserSimulatorConfig(backend="openai", base_url=server.base_url, api_key_env=KEY_VARIABLE,
                                              timeout_s=5.0, max_retries=0))

        async def dialogue():
            environment = Tau2Env.from_row(row, user, {})
            opening = await environment.opening()
            step = await environment.step(Action(content="", raw="Please look at your status bar and tell me."))
            return opening, step

        import asyncio

        opening, step = asyncio.run(dialogue())
        requests = server.requests
    assert opening == [{"role": "user", "content": "My phone cannot send picture messages."}]
    assert "check_status_bar" in requests[0]["messages"][0]["content"]  # the device tools are listed for it
    assert "<tool_response>" in requests[-1]["messages"][-1]["content"]
    assert requests[-1]["messages"][-2] == {"role": "assistant", "content": call("check_status_bar").strip()}
    (message,) = step.messages
    assert message["role"] == "user" and message["content"].startswith("The status bar says:")
    assert not step.done


def test_rows_need_a_model_customer_and_name_the_install_command():
    import asyncio
    import subprocess
    import sys

    from infopo_verl.envs.tau2 import INSTALL_HINT, Tau2Env

    row = {"extra_info": {"infopo": {"env": "tau2", "domain": "mock", "task_id": TASK_ID, "tools": "[]"}}}
    with pytest.raises(ValueError, match="backend=scripted has no rules"):
        Tau2Env.from_row(row, None, {})
    unknown = {"extra_info": {"infopo": {**row["extra_info"]["infopo"], "task_id": "nope"}}}
    with pytest.raises(ValueError, match="not a task of the installed mock domain"):
        asyncio.run(Tau2Env.from_row(unknown, object(), {}).opening())
    with pytest.raises(ValueError, match="tau2_step_timeout_s must be a number > 0"):
        Tau2Env.from_row(row, object(), {"tau2_step_timeout_s": 0})
    # Without the package (hidden from the import system in a fresh interpreter) a row stops with the install line.
    script = (
        "import sys; sys.modules['tau2'] = None\n"
        "from infopo_verl.envs.tau2 import Tau2Env\n"
        f"row = {row!r}\n"
        "try:\n    Tau2Env.from_row(row, None, {})\nexcept ValueError as error:\n    print(error)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert INSTALL_HINT in result.stdout and "not installed" in result.stdout


def test_the_policy_backend_plays_the_customer_from_tau2s_own_prompt(model_dir, mock_row):
    """``policy``: the rollout's own server (here the tiny model on CPU) plays the customer; no endpoint involved."""
    import asyncio

    from infopo_verl.config import UserSimulatorConfig
    from infopo_verl.envs.tau2 import Tau2Env
    from infopo_verl.users.policy import PolicyUser

    class Recording(LocalLLMServer):
        prompts: list[str] = []

        async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
            self.prompts.append(self.tokenizer.decode(prompt_ids))
            return await super().generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params, **kwargs)

    server = Recording(model_dir, max_model_len=4096, seed=3)
    config = UserSimulatorConfig(backend="policy", max_tokens=24, max_retries=2, backoff_s=0.0, temperature=1.0)
    customer = PolicyUser(server, server.tokenizer, config)
    (opening,) = asyncio.run(Tau2Env.from_row(mock_row, customer, {}).opening())
    assert opening["role"] == "user" and opening["content"].strip()
    # The customer's prompt is tau2's: its simulation guidelines and the task's scenario, then the agent's greeting.
    assert "Important Meeting" in server.prompts[0] and "Hi! How can I help you today?" in server.prompts[0]
