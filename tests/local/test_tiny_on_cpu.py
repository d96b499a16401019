"""The tiny tokenizer and model: chat template, exact round trips, and verl's turn-by-turn token building."""

import json
import random
from pathlib import Path

import pytest
import torch
from testkit.tiny import tiny_model_path, tiny_tokenizer_path
from transformers import AutoModelForCausalLM, AutoTokenizer
from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

from infopo_verl.local.tiny import render_training_dialogue, synthetic_dialogue
from infopo_verl.envs.clarify import generate_rows


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_path(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(model_dir)


DIALOGUE = [
    {"role": "system", "content": "You help a user. The details you need are: cuisine, day."},
    {"role": "user", "content": "Book a table for me."},
    {"role": "assistant", "content": "What cuisine would you like?"},
    {"role": "user", "content": "The cuisine is thai."},
    {"role": "assistant", "content": "ANSWER: cuisine=thai; day=friday"},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "interact_with_env",
            "description": "Talk to the environment.",
            "parameters": {"type": "object", "properties": {"choice": {"type": "string"}}, "required": ["choice"]},
        },
    }
]


def render(tokenizer, messages, **kwargs):
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False, **kwargs))


def test_special_tokens_and_newline(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") != tokenizer.unk_token_id
    # verl's Qwen continuous-token builder requires "\n" to be exactly one token
    assert len(tokenizer.encode("\n", add_special_tokens=False)) == 1


def test_chatml_layout(tokenizer):
    text = tokenizer.apply_chat_template(DIALOGUE[:4], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou help a user. The details you need are: cuisine, day.<|im_end|>\n"
        "<|im_start|>user\nBook a table for me.<|im_end|>\n"
        "<|im_start|>assistant\nWhat cuisine would you like?<|im_end|>\n"
        "<|im_start|>user\nThe cuisine is thai.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert not tokenizer.apply_chat_template(DIALOGUE[:2], tokenize=False).endswith("<|im_start|>assistant\n")


def test_tools_and_tool_messages(tokenizer):
    messages = DIALOGUE[:2] + [
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "interact_with_env", "arguments": {"choice": "search"}}}]},
        {"role": "tool", "content": "first"},
        {"role": "tool", "content": "second"},
    ]
    text = tokenizer.apply_chat_template(messages, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    system = text.split("<|im_end|>")[0]
    assert system.startswith("<|im_start|>system\nYou help a user.") and "# Tools" in system
    assert json.dumps(TOOLS[0]) in system
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "interact_with_env", "arguments": {"choice": "search"}}' in text
    # consecutive tool results share one user message
    assert text.endswith(
        "<|im_start|>user\n<tool_response>\nfirst\n</tool_response>\n<tool_response>\nsecond\n</tool_response>"
        "<|im_end|>\n<|im_start|>assistant\n"
    )
    no_system = tokenizer.apply_chat_template(DIALOGUE[1:2], tools=TOOLS, tokenize=False)
    assert no_system.startswith("<|im_start|>system\nYou are a helpful assistant.\n\n# Tools")


@pytest.mark.parametrize("text", ["ANSWER: cuisine=thai; day=friday", "  Hello,\n\n world!  ", "Ünïcode ✓ 日本", ""])
def test_decode_encode_round_trip(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_round_trip(tokenizer):
    ids = render(tokenizer, DIALOGUE)
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(DIALOGUE, tokenize=False)


@pytest.mark.parametrize("with_tools", [False, True])
def test_turn_by_turn_ids_equal_whole_dialogue(tokenizer, with_tools):
    """Build the dialogue the way verl's agent loop does and compare with one apply_chat_template call."""
    tools = TOOLS if with_tools else None
    builder = create_continuous_token_builder(tokenizer, hf_model_type="qwen2")
    assert type(builder).__name__ == "QwenContinuousTokenBuilder"
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    messages = DIALOGUE[:2]
    ids = builder.build_initial_tokens(messages, tools=tools)
    for message in DIALOGUE[2:]:
        if message["role"] == "assistant":
            # the server returns the sampled content followed by its stop token
            generated = tokenizer.encode(message["content"], add_special_tokens=False) + [im_end]
            ids = builder.merge_assistant_tokens(ids, generated).token_ids
            messages = messages + [message]
        else:
            updated = messages + [message]
            ids = builder.merge_context_tokens(messages, updated, ids, tools=tools).token_ids
            messages = updated
    # the dialogue ends with an assistant turn that stopped at <|im_end|> (no trailing "\n")
    whole = render(tokenizer, DIALOGUE, tools=tools)
    assert ids == whole[:-1] and whole[-1] == tokenizer.encode("\n", add_special_tokens=False)[0]


def test_training_dialogue_mask_covers_exactly_the_agent_tokens(tokenizer):
    row = generate_rows(1, seed=5, split="train")[0]
    messages = synthetic_dialogue(row, random.Random(0))
    ids, mask = render_training_dialogue(tokenizer, messages)
    assert ids == render(tokenizer, messages)
    trained = tokenizer.decode([token for token, keep in zip(ids, mask) if keep])
    expected = "".join(m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant")
    assert trained == expected


def test_model_directory_loads_with_architectures(model_dir):
    config = json.loads((Path(model_dir) / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"] and config["model_type"] == "qwen2"
    generation = json.loads((Path(model_dir) / "generation_config.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert set(generation["eos_token_id"]) == {tokenizer.eos_token_id, tokenizer.pad_token_id}
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.config.vocab_size == len(tokenizer)
    logits = model(input_ids=torch.tensor([render(tokenizer, DIALOGUE)])).logits
    assert logits.shape[-1] == len(tokenizer) and torch.isfinite(logits).all()


def test_verl_model_config_accepts_the_directory(model_dir):
    from verl.workers.config import HFModelConfig

    config = HFModelConfig(path=model_dir)
    assert config.architectures == ["Qwen2ForCausalLM"]


def test_tokenizer_build_is_deterministic(tmp_path, tokenizer):
    again = AutoTokenizer.from_pretrained(tiny_tokenizer_path(tmp_path))
    assert again.get_vocab() == tokenizer.get_vocab()
    assert again.chat_template == tokenizer.chat_template
