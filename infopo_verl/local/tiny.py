"""A tiny Qwen2-style chat model and tokenizer built from code, for CPU tests and the CPU demo (no hub access).

- :func:`build_tokenizer`: a byte-level BPE tokenizer (any text encodes and decodes exactly, like Qwen's) whose
  merges are learnt from clarify-task text, with Qwen's special tokens (``<|endoftext|>`` pad, ``<|im_start|>``,
  ``<|im_end|>`` eos) and a ChatML chat template of our own writing that follows Qwen2.5's layout (system / user /
  assistant / tool roles, tool calls, ``tools`` rendered into the system message, ``add_generation_prompt``).
  ``"\\n"`` is one token and each message renders independently of its neighbours, which is what verl's
  ``QwenContinuousTokenBuilder`` (picked from ``model_type: qwen2``) needs to build dialogues turn by turn.
- :func:`build_model`: an untrained ``Qwen2ForCausalLM`` (2 layers, hidden 128) saved with the tokenizer in one
  directory, with ``architectures`` in config.json (verl's ``HFModelConfig`` asserts it) and a generation config
  whose eos ids are ``<|im_end|>`` and ``<|endoftext|>`` (as Qwen2.5-Instruct's).
- :func:`trained_model`: that model trained for about a minute and a half on CPU: first on short "answer drills"
  (the user's value sentences, then the ``ANSWER:`` line), which teach it to copy values, then on synthetic clarify
  dialogues played against the real :class:`~infopo_verl.envs.clarify.ClarifyEnv` user (ask about the slots, then
  copy the user's values into the ``ANSWER:`` line; a fifth of the dialogues have a user who knows nothing, so the
  agent must guess). Its final answer therefore depends on the feedback, which is what information gain measures.
  Cached by a hash of the recipe.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from infopo_verl.envs.clarify import (
    DONT_KNOW,
    SLOTS,
    TEMPLATES,
    ClarifyEnv,
    format_answer,
    generate_rows,
    slot_reply,
    system_prompt,
)

__all__ = [
    "CHAT_TEMPLATE",
    "build_tokenizer",
    "build_model",
    "trained_model",
    "render_training_dialogue",
    "synthetic_dialogue",
]

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]  # ids 0, 1, 2
VOCAB_SIZE = 768
"""BPE vocabulary size including the 256 byte tokens and the 3 special tokens. Ours: covers every clarify word."""
PLACEHOLDER = "No information found."
"""InfoPO's default counterfactual text (``algorithm.infopo.placeholder``); in the corpus so it tokenises compactly."""

# ChatML in Qwen2.5's layout, written for this project. Every message renders as
# "<|im_start|>{role}\n{content}<|im_end|>\n" except: tools go into the (first) system message; assistant tool calls
# follow the content as <tool_call> JSON blocks; consecutive tool results share one user message of
# <tool_response> blocks (Qwen's convention, which verl's continuous-token builder handles by rendering tool groups).
CHAT_TEMPLATE = (
    "{%- macro text(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- elif content -%}{%- for part in content if part.type == 'text' -%}{{ part.text }}{%- endfor -%}"
    "{%- endif -%}"
    "{%- endmacro -%}"
    "{%- set has_system = messages and messages[0].role == 'system' -%}"
    "{%- if tools -%}"
    "{{ '<|im_start|>system\\n' }}"
    "{%- if has_system -%}{{ text(messages[0].content) }}{%- else -%}{{ 'You are a helpful assistant.' }}{%- endif -%}"
    "{{ '\\n\\n# Tools\\n\\nYou can call the functions listed inside <tools></tools>:\\n<tools>' }}"
    "{%- for tool in tools -%}{{ '\\n' }}{{ tool | tojson }}{%- endfor -%}"
    "{{ '\\n</tools>\\n\\nTo call one, reply with a JSON object inside <tool_call></tool_call> tags:\\n"
    "<tool_call>\\n{\"name\": <function name>, \"arguments\": <arguments as a JSON object>}\\n</tool_call>"
    "<|im_end|>\\n' }}"
    "{%- elif has_system -%}"
    "{{ '<|im_start|>system\\n' }}{{ text(messages[0].content) }}{{ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and has_system -%}"
    "{%- elif message.role == 'tool' -%}"
    "{%- if loop.previtem is not defined or loop.previtem.role != 'tool' -%}{{ '<|im_start|>user' }}{%- endif -%}"
    "{{ '\\n<tool_response>\\n' }}{{ text(message.content) }}{{ '\\n</tool_response>' }}"
    "{%- if loop.nextitem is not defined or loop.nextitem.role != 'tool' -%}{{ '<|im_end|>\\n' }}{%- endif -%}"
    "{%- elif message.role == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}{{ text(message.content) }}"
    "{%- for call in message.tool_calls or [] -%}"
    "{%- set function = call.function if call.function is defined else call -%}"
    "{%- if not loop.first or text(message.content) -%}{{ '\\n' }}{%- endif -%}"
    "{{ '<tool_call>\\n{\"name\": \"' }}{{ function.name }}{{ '\", \"arguments\": ' }}"
    "{%- if function.arguments is string -%}{{ function.arguments }}{%- else -%}{{ function.arguments | tojson }}"
    "{%- endif -%}"
    "{{ '}\\n</tool_call>' }}"
    "{%- endfor -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message.role + '\\n' }}{{ text(message.content) }}{{ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# --- the synthetic agent (our own wording; the env's keyword rules decide what the user answers) -------------------
_SINGLE_QUESTIONS = ("What {a} would you like?", "Which {a} do you prefer?", "What is the {a}?", "Tell me the {a}.")
_DOUBLE_QUESTIONS = ("What {a} and {b} would you like?", "What are the {a} and the {b}?")
_VAGUE_QUESTIONS = ("Can you tell me more?", "What else should I know?", "Anything special?")
_UNINFORMATIVE_REPLIES = (DONT_KNOW, PLACEHOLDER)


def _tokenizer_corpus() -> Iterator[str]:
    """Every word the clarify task, the synthetic agent and the chat template produce, for learning BPE merges."""
    for template in TEMPLATES.values():
        yield from template.requests
        names = list(template.slots)
        for size in range(2, len(names) + 1):
            yield system_prompt(names[:size])
            yield system_prompt(names[-size:])
    for slot in SLOTS.values():
        for value in slot.values:
            yield slot_reply(slot.name, value) * 3
            yield format_answer({slot.name: value}) * 3
        for question in _SINGLE_QUESTIONS:
            yield question.format(a=slot.name) * 2
    for question in _DOUBLE_QUESTIONS + _VAGUE_QUESTIONS + _UNINFORMATIVE_REPLIES:
        yield question * 3
    yield "user assistant system tool\n" * 5
    yield "You are a helpful assistant.\n\n# Tools\n<tools></tools> <tool_call></tool_call> <tool_response>"
    yield '{"name": "interact_with_env", "arguments": {"choice": "answer", "content": ""}}'


def build_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Learn the tiny byte-level BPE tokenizer, save it (``save_pretrained``) to ``path`` and return it.

    Deterministic: the corpus is fixed text and the BPE trainer breaks ties deterministically, so two builds give
    the same ids (the trained-model cache relies on it and checks it anyway through the recipe hash).
    """
    backend = Tokenizer(models.BPE())
    # GPT-2's split regex keeps "\n" apart from the words around it, so "assistant\n" + content tokenises as the
    # two pieces separately: turn-by-turn concatenation equals whole-dialogue tokenisation.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(_tokenizer_corpus()), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        additional_special_tokens=[IM_START],
        clean_up_tokenization_spaces=False,
        model_max_length=32768,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    Path(path).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(path))
    return tokenizer


def _model_config(tokenizer: PreTrainedTokenizerFast) -> Qwen2Config:
    # Ours: 2 layers x hidden 128 (~0.4M parameters) learns "copy the value the user said" in ~75 s on 2 CPU cores
    # (with the drills of _RECIPE), and is small enough that every test forward pass is milliseconds.
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.convert_tokens_to_ids(PAD_TOKEN),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_model(path: str | os.PathLike, tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> Qwen2ForCausalLM:
    """Save a freshly initialised tiny ``Qwen2ForCausalLM`` plus ``tokenizer`` into ``path``; return the model.

    ``path`` is then a complete model directory (config.json with ``architectures``, generation_config.json,
    weights, tokenizer files) that verl, ``AutoModelForCausalLM`` and :class:`LocalLLMServer` all load.
    """
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(_model_config(tokenizer))
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.pad_token_id,
    )
    model.eval()
    _save(model, tokenizer, Path(path))
    return model


def _save(model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))


# --- synthetic training dialogues ----------------------------------------------------------------------------------


def synthetic_dialogue(row: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
    """One full chat for ``row``: its prompt, then agent questions and the scripted user's replies, then the answer.

    The agent asks about one or two slots per turn (sometimes a vague question first, sometimes nothing at all),
    and its final answer copies every value the user gave and guesses the rest uniformly from the slot's
    vocabulary. The replies come from :meth:`ClarifyEnv.reply`, the exact rules the rollout's user follows; an
    uninformative row's user answers with "I don't know." or InfoPO's placeholder text.
    """
    env = ClarifyEnv.from_row(row, None, {})
    messages = [dict(message) for message in row["prompt"]]
    pending = list(env.slots)
    known: dict[str, str] = {}
    if rng.random() < 0.15:
        pending = []  # answer straight away: a guess, so the model also knows how to act without asking
    elif rng.random() < 0.15:
        pending.insert(0, "")  # a question naming no slot
    while pending:
        if pending[0] == "":
            question, asked = rng.choice(_VAGUE_QUESTIONS), [pending.pop(0)]
        elif len(pending) >= 2 and rng.random() < 0.35:
            asked = [pending.pop(0), pending.pop(0)]
            question = rng.choice(_DOUBLE_QUESTIONS).format(a=asked[0], b=asked[1])
        else:
            asked = [pending.pop(0)]
            question = rng.choice(_SINGLE_QUESTIONS).format(a=asked[0])
        reply = rng.choice(_UNINFORMATIVE_REPLIES) if env.uninformative else env.reply(question)
        for name in asked:
            if name and not env.uninformative:
                known[name] = env.slots[name]
        messages += [{"role": "assistant", "content": question}, {"role": "user", "content": reply}]
    answer = {name: known.get(name) or rng.choice(SLOTS[name].values) for name in env.slots}
    messages.append({"role": "assistant", "content": format_answer(answer)})
    return messages


def _answer_drill(row: dict[str, Any], rng: random.Random) -> list[dict[str, str]]:
    """A short copying exercise for ``row``: one user message with every slot's value sentence, in shuffled order
    (``"The day is monday. The cuisine is thai."``), then the assistant's ``ANSWER:`` line in the task's slot order.

    No system prompt and no questions, so the sequence is ~40 tokens and almost every trained token is a copy; the
    shuffle makes the model find each value by its slot name rather than by its position.
    """
    env = ClarifyEnv.from_row(row, None, {})
    order = list(env.slots)
    rng.shuffle(order)
    return [
        {"role": "user", "content": " ".join(slot_reply(name, env.slots[name]) for name in order)},
        {"role": "assistant", "content": format_answer(env.slots)},
    ]


def render_training_dialogue(tokenizer: PreTrainedTokenizerFast, messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of ``messages`` and a loss mask that is 1 on what the agent generates.

    Returns ``(input_ids, loss_mask)``, both ``(seq_len,)`` lists; ``input_ids`` equals
    ``apply_chat_template(messages)``. The masked tokens are each assistant message's content and its ``<|im_end|>``
    (the stop token the server emits), not the ``"\\n"`` the template adds after it. One render and one encode
    per dialogue (offsets locate the assistant spans), so thousands of dialogues take a second or two.
    """
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []  # character spans [start, end) of generated text: assistant content + <|im_end|>
    cursor = 0
    for message in messages:
        if message["role"] != "assistant":
            continue
        opening = f"{IM_START}assistant\n{message['content']}{IM_END}"
        start = text.find(opening, cursor)
        if start < 0:
            raise ValueError(f"assistant message {message['content']!r} not found in the rendered chat")
        spans.append((start + len(IM_START) + len("assistant\n"), start + len(opening)))
        cursor = start + len(opening)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(begin <= first and last <= end for begin, end in spans)) for first, last in encoding["offset_mapping"]]
    return list(encoding["input_ids"]), mask


# --- training ------------------------------------------------------------------------------------------------------

_RECIPE = {
    "version": 3,
    "drills": 4000,
    "drill_steps": 400,
    "drill_batch_size": 32,
    "dialogues": 6000,
    "uninformative_share": 0.2,
    "steps": 900,
    "batch_size": 16,
    "value_weight": 3.0,
    "learning_rate": 3e-3,
    "warmup_steps": 50,
    "weight_decay": 0.01,
    "grad_clip": 1.0,
}
"""Ours, measured on 2 CPU cores: ``drill_steps`` steps on answer drills then the rest (``steps`` in all) on
dialogues, the copied value tokens of the ANSWER line weighted ``value_weight`` in the loss; about 80 s of training
(90 s with building the data). Greedy final-answer slot accuracy on 40 held-out tasks (every slot asked, then the
answer; ``tests/local/test_trained_model_on_cpu.py``): 0.94 with informative replies, 0.28 with "I don't know."
replies (blind guessing). Variants measured on the way: the version-1 recipe (800 dialogue steps at lr 5e-3, no
drills) stayed at chance (~0.26-0.30), as did 1200 dialogue steps at lr 2e-3 with value weighting and 600 steps
with 8 heads; drills without value weighting reached ~0.5; up-weighting guessed values too (0.97 accuracy) made
the model's guesses depend on which uninformative text the user sent, raising the uninformative information gain;
a 0.3 uninformative share with 1000 steps gave 0.95 accuracy but no better signal-validity ratio."""


def _training_data(tokenizer: PreTrainedTokenizerFast, seed: int) -> list[tuple[list[int], list[int]]]:
    count = _RECIPE["dialogues"]
    uninformative = int(count * _RECIPE["uninformative_share"])
    rows = generate_rows(count - uninformative, seed, "tiny-train") + generate_rows(
        uninformative, seed, "tiny-train-uninformative", uninformative=True
    )
    rng = random.Random(f"infopo-tiny-dialogues:{seed}")
    return [render_training_dialogue(tokenizer, synthetic_dialogue(row, rng)) for row in rows]


def _drill_data(tokenizer: PreTrainedTokenizerFast, seed: int) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(f"infopo-tiny-drills:{seed}")
    rows = generate_rows(_RECIPE["drills"], seed, "tiny-drills")
    return [render_training_dialogue(tokenizer, _answer_drill(row, rng)) for row in rows]


def _loss_weights(tokenizer: PreTrainedTokenizerFast, ids: list[int], mask: list[int]) -> list[float]:
    """``mask`` as floats, with ``value_weight`` on the copied value tokens of ANSWER lines: tokens after `` =`` (up
    to ``;``) that the user already said. Guessed values keep weight 1, so the model's guesses stay close to uniform
    whatever the uninformative reply was (their spread would otherwise show up as information gain)."""
    equals, separator = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(" =") + tokenizer.tokenize(";"))
    weights, in_value, heard = [float(flag) for flag in mask], False, set()
    for position, (token, flag) in enumerate(zip(ids, mask)):
        if not flag:
            heard.add(token)
            in_value = False
        elif token in (separator, tokenizer.eos_token_id):
            in_value = False
        elif token == equals:
            in_value = True
        elif in_value and token in heard:
            weights[position] = _RECIPE["value_weight"]
    return weights


def _recipe_hash(tokenizer: PreTrainedTokenizerFast, data: list[tuple[list[int], list[int]]], seed: int) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"recipe": _RECIPE, "seed": seed, "config": _model_config(tokenizer).to_dict(),
                              "torch": torch.__version__.split("+")[0]}, sort_keys=True, default=str).encode())
    digest.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    digest.update(CHAT_TEMPLATE.encode())
    for ids, mask in data:
        digest.update(json.dumps([ids, mask]).encode())
    return digest.hexdigest()[:16]


def trained_model(cache_dir: str | os.PathLike = ".cache/infopo-tiny", seed: int = 0) -> str:
    """Path of the tiny model trained on synthetic clarify dialogues; trains it (about 1.5 minutes on 2 CPU cores) on first use.

    The directory is ``<cache_dir>/clarify-<hash>``, the hash covering the recipe, the tokenizer, the model config
    and every training token, so a changed recipe trains afresh and an unchanged one returns at once. Training
    writes to a temporary directory renamed into place at the end, so concurrent callers never see half a model.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="tokenizer-", dir=cache))
    try:
        tokenizer = build_tokenizer(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    drills, data = _drill_data(tokenizer, seed), _training_data(tokenizer, seed)
    target = cache / f"clarify-{_recipe_hash(tokenizer, drills + data, seed)}"
    if (target / "config.json").exists():
        return str(target)
    staging = Path(tempfile.mkdtemp(prefix="training-", dir=cache))
    try:
        model = build_model(staging, tokenizer, seed=seed)
        _train(model, tokenizer, drills, data, seed)
        model.eval()
        _save(model, tokenizer, staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "config.json").exists():  # another process finished first: keep theirs
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def _train(model: Qwen2ForCausalLM, tokenizer: PreTrainedTokenizerFast, drills: list[tuple[list[int], list[int]]],
           data: list[tuple[list[int], list[int]]], seed: int) -> None:
    """Weighted next-token cross-entropy on the agent's tokens (:func:`_loss_weights`, averaged over the agent's
    tokens), AdamW with linear warm-up and cosine decay; the first ``drill_steps`` batches are drills."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=_RECIPE["learning_rate"], weight_decay=_RECIPE["weight_decay"])
    steps, warmup = _RECIPE["steps"], _RECIPE["warmup_steps"]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)),
    )
    model.train()
    started = time.monotonic()
    pad = tokenizer.pad_token_id
    drill_weights = [_loss_weights(tokenizer, ids, mask) for ids, mask in drills]
    data_weights = [_loss_weights(tokenizer, ids, mask) for ids, mask in data]
    print(f"[infopo tiny] training a {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M-parameter model "
          f"on {len(drills)} answer drills for {_RECIPE['drill_steps']} steps, then {len(data)} clarify dialogues "
          f"({steps} steps in all)", flush=True)
    for step in range(steps):
        drilling = step < _RECIPE["drill_steps"]
        source, source_weights = (drills, drill_weights) if drilling else (data, data_weights)
        batch_size = _RECIPE["drill_batch_size"] if drilling else _RECIPE["batch_size"]
        picks = torch.randint(len(source), (batch_size,), generator=generator).tolist()
        length = max(len(source[i][0]) for i in picks)
        input_ids = torch.full((len(picks), length), pad, dtype=torch.long)  # [bs, L], right padded
        loss_mask = torch.zeros((len(picks), length), dtype=torch.float)  # [bs, L], loss weights
        attention_mask = torch.zeros((len(picks), length), dtype=torch.long)  # [bs, L]
        for row, index in enumerate(picks):
            ids = source[index][0]
            input_ids[row, : len(ids)] = torch.tensor(ids)
            loss_mask[row, : len(ids)] = torch.tensor(source_weights[index], dtype=torch.float)
            attention_mask[row, : len(ids)] = 1
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [bs, L, vocab]
        # position j predicts token j+1: the mask of the predicted token decides whether it is trained
        token_loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1), reduction="none"
        ).view(len(picks), length - 1)  # [bs, L-1]
        target_mask = loss_mask[:, 1:]  # [bs, L-1]
        loss = (token_loss * target_mask).sum() / (target_mask > 0).sum().clamp(min=1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), _RECIPE["grad_clip"])
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"[infopo tiny] step {step + 1}/{steps} {'drill' if drilling else 'dialogue'} loss {loss.item():.4f} "
                  f"({time.monotonic() - started:.0f}s)", flush=True)
