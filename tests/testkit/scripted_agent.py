"""A stand-in inference server whose agent turns are scripted text, for tasks a tiny CPU model cannot do.

:class:`ScriptedAgentServer` answers verl's ``generate`` like :class:`~infopo_verl.local.server.LocalLLMServer`
(the boundary a CPU cannot cross): an agent request gets the ids of the next scripted reply, tokenised by the real
tokenizer, plus the end-of-turn token; a scoring request (``prompt_logprobs``) goes to the real tiny model, so
information gain is still measured on real log-probs. The script is chosen by a key found in the decoded prompt
(e.g. the task's function name), the reply by how many agent turns the prompt already holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from verl.workers.rollout.replica import TokenOutput

from infopo_verl.local.server import LocalLLMServer


class ScriptedAgentServer:
    def __init__(self, server: LocalLLMServer, scripts: Mapping[str, Sequence[str]], assistant_header: str):
        self.server = server
        self.tokenizer = server.tokenizer
        self.scripts = dict(scripts)
        self.assistant_header = assistant_header
        self.agent_requests: list[tuple[str, int]] = []

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        if "prompt_logprobs" in sampling_params:
            return await self.server.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params,
                                              **kwargs)
        text = self.tokenizer.decode(prompt_ids)
        keys = [key for key in self.scripts if key in text]
        if len(keys) != 1:
            raise ValueError(f"request {request_id}: the prompt matches scripts {keys}, expected exactly one")
        turn = text.count(self.assistant_header) - 1  # the last header is the generation prompt
        replies = self.scripts[keys[0]]
        reply = replies[min(turn, len(replies) - 1)]
        self.agent_requests.append((keys[0], turn))
        ids = list(self.tokenizer.encode(reply, add_special_tokens=False)) + [self.tokenizer.eos_token_id]
        log_probs = None
        if sampling_params.get("logprobs"):
            # The real model's log-probs of the scripted ids (element j of prompt_logprobs describes token j + 1).
            scored = await self.server.generate(
                request_id, prompt_ids=list(prompt_ids) + ids,
                sampling_params={"max_tokens": 1, "prompt_logprobs": 0, "temperature": 1.0},
            )
            rows = scored.extra_fields["prompt_logprobs"]
            log_probs = [rows[len(prompt_ids) - 1 + k][0] for k in range(len(ids))]
        return TokenOutput(token_ids=ids, log_probs=log_probs, stop_reason="completed")
