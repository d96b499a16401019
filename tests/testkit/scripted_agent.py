"""An inference-server stand-in whose agent turns follow a script, for tasks a tiny CPU model cannot do.

The fake sits at the inference-server boundary only: the agent loop, the chat template and the tokenizer are the
real ones. A dialogue's first generation request picks its plan by a marker found in the decoded prompt (so the
choice does not depend on how concurrent dialogues interleave); each later request of that dialogue (same request
id) returns the plan's next turn, tokenized by the real tokenizer and closed by ``<|im_end|>``. Every scoring
request (``prompt_logprobs``) and the log-probs of the scripted tokens come from a real
:class:`~infopo_verl.local.server.LocalLLMServer`, so r_t is the real model's measurement.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from verl.workers.rollout.replica import TokenOutput

from infopo_verl.local.server import LocalLLMServer

__all__ = ["ScriptedAgentServer"]


class ScriptedAgentServer:
    """``plans`` maps a marker (text of the prompt) to the agent turns of a dialogue whose prompt contains it."""

    def __init__(self, scorer: LocalLLMServer, plans: Mapping[str, Sequence[str]]):
        self.scorer = scorer
        self.tokenizer = scorer.tokenizer
        self.plans = {marker: list(turns) for marker, turns in plans.items()}
        self.end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self._dialogues: dict[str, tuple[list[str], int]] = {}
        self._lock = threading.Lock()
        self.plan_of: dict[str, str] = {}
        """request id -> the marker whose plan that dialogue follows."""

    def _next_turn(self, request_id: str, prompt_ids: list[int]) -> str:
        with self._lock:
            if request_id not in self._dialogues:
                prompt = self.tokenizer.decode(prompt_ids)
                markers = [marker for marker in self.plans if marker in prompt]
                if len(markers) != 1:
                    raise AssertionError(f"the prompt of {request_id} matches {len(markers)} plans: {markers}")
                self.plan_of[request_id] = markers[0]
                self._dialogues[request_id] = (self.plans[markers[0]], 0)
            turns, index = self._dialogues[request_id]
            if index >= len(turns):
                raise AssertionError(f"dialogue {request_id} asked for turn {index}, its plan has {len(turns)}")
            self._dialogues[request_id] = (turns, index + 1)
            return turns[index]

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        if sampling_params.get("prompt_logprobs") is not None:
            return await self.scorer.generate(request_id, prompt_ids=prompt_ids, sampling_params=sampling_params,
                                              **kwargs)
        text = self._next_turn(request_id, list(prompt_ids))
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.end_id]
        ids = ids[: int(sampling_params.get("max_tokens") or len(ids))]
        log_probs = None
        if sampling_params.get("logprobs"):
            # The real model's raw log-probs of the scripted tokens (row j describes token j + 1).
            scored = await self.scorer.generate(
                f"{request_id}-logprobs", prompt_ids=list(prompt_ids) + ids,
                sampling_params={"max_tokens": 1, "temperature": 1.0, "prompt_logprobs": 0},
            )
            rows = scored.extra_fields["prompt_logprobs"]
            log_probs = [float(rows[len(prompt_ids) - 1 + k][0]) for k in range(len(ids))]
        return TokenOutput(token_ids=ids, log_probs=log_probs, stop_reason="completed")
