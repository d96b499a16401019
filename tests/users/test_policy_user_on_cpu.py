"""PolicyUser with a real tokenizer; the inference server is the only fake (scripted, then the CPU stand-in)."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer
from verl.workers.rollout.replica import TokenOutput

from infopo_verl.config import UserSimulatorConfig
from infopo_verl.local.server import LocalLLMServer
from infopo_verl.local.tiny import build_model, build_tokenizer
from infopo_verl.users.base import SimulatorFailure
from infopo_verl.users.policy import PolicyUser

CHAT = [
    {"role": "system", "content": "You are the user. You want a pizza with mushrooms."},
    {"role": "user", "content": "What topping would you like?"},
]
REPLY = "I want mushrooms."
CONFIG = UserSimulatorConfig(backend="policy", temperature=0.0, max_tokens=48, max_retries=2, backoff_s=0.0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    build_model(path, build_tokenizer(path))
    return path


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(str(model_dir))


class ScriptedServerManager:
    """verl's server-manager call, answering from a queue: a TokenOutput, or an exception to raise."""

    def __init__(self, outputs):
        self.outputs = list(outputs)
        self.calls: list[dict] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        self.calls.append({"request_id": request_id, "prompt_ids": prompt_ids, "sampling_params": dict(sampling_params)})
        output = self.outputs.pop(0)
        if isinstance(output, Exception):
            raise output
        return output


def completed(tokenizer, text: str) -> TokenOutput:
    """What vLLM returns for ``text``: its ids followed by the stop token, which stays in token_ids."""
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
    return TokenOutput(token_ids=ids, stop_reason="completed")


async def test_reply_renders_the_simulator_chat_and_decodes_without_special_tokens(tokenizer):
    manager = ScriptedServerManager([completed(tokenizer, REPLY)])
    user = PolicyUser(manager, tokenizer, CONFIG)
    assert await user.reply(CHAT) == REPLY
    (call,) = manager.calls
    assert tokenizer.decode(call["prompt_ids"]) == (
        "<|im_start|>system\nYou are the user. You want a pizza with mushrooms.<|im_end|>\n"
        "<|im_start|>user\nWhat topping would you like?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert all(type(token) is int for token in call["prompt_ids"])
    assert call["sampling_params"]["temperature"] == 0.0
    assert call["sampling_params"]["max_tokens"] == 48
    assert call["sampling_params"]["logprobs"] is False


async def test_errors_and_aborts_are_retried_with_fresh_request_ids(tokenizer):
    manager = ScriptedServerManager(
        [RuntimeError("replica restarting"), TokenOutput(token_ids=[], stop_reason="aborted"), completed(tokenizer, REPLY)]
    )
    assert await PolicyUser(manager, tokenizer, CONFIG).reply(CHAT) == REPLY
    assert len({call["request_id"] for call in manager.calls}) == 3


async def test_persistent_errors_end_in_simulator_failure(tokenizer):
    manager = ScriptedServerManager([ValueError("prompt too long " * 100)] * 3)
    with pytest.raises(SimulatorFailure) as failure:
        await PolicyUser(manager, tokenizer, CONFIG).reply(CHAT)
    reason = failure.value.reason
    assert reason.startswith("policy user simulator: server_manager.generate raised ValueError: 'prompt too long")
    assert reason.endswith("(3 attempts)")
    assert len(reason) < 300


async def test_a_reply_of_only_special_tokens_is_empty_and_never_replaced(tokenizer):
    only_eos = TokenOutput(token_ids=[tokenizer.eos_token_id], stop_reason="completed")
    manager = ScriptedServerManager([only_eos] * 3)
    with pytest.raises(SimulatorFailure, match=r"policy user simulator: empty reply \(3 attempts\)"):
        await PolicyUser(manager, tokenizer, CONFIG).reply(CHAT)


async def test_sampling_params_are_accepted_by_a_vllm_faithful_server(model_dir, tokenizer):
    # The CPU stand-in refuses any key vLLM's SamplingParams would not take, so this checks the request's shape.
    server = LocalLLMServer(model_dir, max_model_len=512)
    config = UserSimulatorConfig(backend="policy", temperature=1.0, max_tokens=6, max_retries=3, backoff_s=0.0)
    reply = await PolicyUser(server, tokenizer, config).reply(CHAT)
    assert isinstance(reply, str) and reply
    assert server.num_requests >= 1
