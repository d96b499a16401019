"""The cached trained tiny model copies what the user said into its final answer, so feedback carries information.

Each held-out clarify task is teacher-forced through a full dialogue (one question per slot, the scripted user's
replies) up to the answer turn; the model then writes the ``ANSWER:`` line greedily through :class:`LocalLLMServer`
and :class:`ClarifyEnv` scores it. With informative replies it must get most slots right; with "I don't know."
replies it can only guess, so its accuracy must stay near chance.
"""

from testkit.tiny import trained_model_path
from transformers import AutoTokenizer

from infopo_verl.envs.base import Action
from infopo_verl.envs.clarify import DONT_KNOW, SLOTS, ClarifyEnv, generate_rows
from infopo_verl.local.server import LocalLLMServer

GREEDY = {"temperature": 0, "max_tokens": 48}
TASKS = 40


async def answer_accuracy(server: LocalLLMServer, tokenizer, uninformative: bool) -> float:
    """Mean final score (share of slots right; 0 when the turn is no answer) over held-out tasks, every slot asked."""
    scores = []
    for row in generate_rows(TASKS, seed=123, split="held-out", uninformative=uninformative):
        env = ClarifyEnv.from_row(row, None, {})
        messages = list(row["prompt"])
        for name in env.slots:
            question = f"What {name} would you like?"
            messages += [{"role": "assistant", "content": question}, {"role": "user", "content": env.reply(question)}]
        prompt_ids = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))
        output = await server.generate(f"answer-{len(scores)}", prompt_ids=prompt_ids, sampling_params=dict(GREEDY))
        await env.step(Action(content=tokenizer.decode(output.token_ids, skip_special_tokens=True)))
        scores.append(await env.final_score())
    return sum(scores) / len(scores)


async def test_final_answer_copies_informative_feedback():
    path = trained_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    server = LocalLLMServer(path, 1024)
    informative = await answer_accuracy(server, tokenizer, uninformative=False)
    uninformative = await answer_accuracy(server, tokenizer, uninformative=True)
    chance = max(1 / len(slot.values) for slot in SLOTS.values())  # the best a blind guess can do on any slot
    assert informative >= 0.8, f"the model should copy the user's values (accuracy {informative:.2f})"
    assert uninformative < chance, f"with '{DONT_KNOW}' replies the model can only guess ({uninformative:.2f})"
    assert informative > uninformative + 0.5, (informative, uninformative)


async def test_sampled_first_turns_are_finished_and_on_task():
    path = trained_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    server = LocalLLMServer(path, 1024, seed=0)
    row = generate_rows(1, seed=9, split="held-out")[0]
    ClarifyEnv.from_row(row, None, {})  # the row is a valid clarify task
    prompt_ids = list(tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=False))
    for index in range(4):
        output = await server.generate(f"first-{index}", prompt_ids=prompt_ids,
                                       sampling_params={"temperature": 1.0, "max_tokens": 48})
        assert output.token_ids[-1] == tokenizer.eos_token_id  # a finished turn, not a runaway
        text = tokenizer.decode(output.token_ids, skip_special_tokens=True)
        # a question about a slot, a question naming none (trained: "Can you tell me more?"), or a direct answer
        assert "ANSWER:" in text or text.rstrip().endswith(("?", ".")), text
