"""Counterfactual scoring: log-probs of a_{t+1} with the real feedback and with the placeholder (SPEC section 1).

Every log-prob comes from the rollout's own inference server through ``server_manager.generate`` with
``prompt_logprobs=0`` and ``max_tokens=1``: the same engine and weights that sampled the dialogue, raw model
log-probs (temperature 1). ``extra_fields["prompt_logprobs"][j][0]`` is log p(ids[j+1] | ids[:j+1]).

Where the factual log-probs come from (:func:`factual_source`):

- ``rollout``: the log-probs the engine returned while sampling a_{t+1}. Free, but only equal to the raw model
  log-probs when sampling applied no transformation: temperature 1, no top-p / top-k, no repetition penalty, or
  ``rollout.logprobs_mode=raw_logprobs``. verl's default ``processed_logprobs`` at temperature 0.6 (the paper's
  Qwen3 / ColBench runs) returns log-probs of the *tempered* distribution, which would bias every r_t.
- ``rescore``: otherwise, one prompt-logprob request over the whole dialogue gives the factual log-probs of every
  agent turn at once (a_{t+1}'s factual context is exactly the prefix before it).

The counterfactual of turn t costs one request of len(ctx_t) + len(PH) + L tokens, which is at most half the
released scheme's two full passes whenever the placeholder is not longer than the feedback. No request ever calls
the user simulator or the environment. A request longer than ``max_model_len - 1`` is skipped and counted, never
truncated.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from infopo_verl.core.info_gain import information_gain

FactualSource = Literal["rollout", "rescore"]

SCORING_SAMPLING_PARAMS = {
    "max_tokens": 1,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": -1,
    "repetition_penalty": 1.0,
    "logprobs": False,
    "prompt_logprobs": 0,
    "detokenize": False,
}
"""One throw-away generated token; what we want is the prompt log-probs under the raw distribution."""


def factual_source(sampling_params: Mapping[str, Any], logprobs_mode: str | None) -> FactualSource:
    """``rollout`` when the sampling log-probs are provably the raw model log-probs, else ``rescore``."""
    if logprobs_mode == "raw_logprobs":
        return "rollout"
    if logprobs_mode not in (None, "processed_logprobs"):
        return "rescore"  # logits modes return no log-probs of the sampled token
    untransformed = (
        float(sampling_params.get("temperature", 1.0)) == 1.0
        and float(sampling_params.get("top_p", 1.0)) >= 1.0
        and int(sampling_params.get("top_k", -1)) in (-1, 0)
        and float(sampling_params.get("repetition_penalty", 1.0)) == 1.0
    )
    return "rollout" if untransformed else "rescore"


@dataclasses.dataclass
class ScoringTurn:
    """What scoring turn t needs. Positions index the dialogue's full token list (prompt + response)."""

    turn: int
    """0-based index of agent turn t (the turn that received the feedback)."""
    counterfactual_prefix: list[int]
    """ctx_t followed by the placeholder message rendered through the chat template (and generation prompt)."""
    next_turn_start: int
    """Position of the first token of a_{t+1} in the full dialogue."""
    next_turn_ids: list[int]
    """The tokens of a_{t+1}, exactly as sampled."""
    rollout_logprobs: list[float] | None = None
    """The engine's log-probs of ``next_turn_ids`` from sampling (used only when the factual source is rollout)."""

    @property
    def counterfactual_ids(self) -> list[int]:
        return self.counterfactual_prefix + self.next_turn_ids


@dataclasses.dataclass
class ScoringResult:
    info_gain: dict[int, float]
    """turn index -> r_t, for every scored turn."""
    skipped: int = 0
    """Eligible turns not scored because a request would exceed max_model_len - 1 tokens."""
    tokens_submitted: int = 0
    """Prompt tokens sent to the server for scoring (factual and counterfactual)."""
    requests: int = 0


class CounterfactualScorer:
    """Scores the eligible turns of one dialogue, all requests concurrently."""

    def __init__(self, server_manager: Any, request_id: str, max_model_len: int):
        self.server_manager = server_manager
        # The dialogue's own request id keeps scoring on the server that holds its prefix in cache.
        self.request_id = request_id
        self.max_model_len = max_model_len

    def fits(self, ids: list[int]) -> bool:
        return len(ids) <= self.max_model_len - 1  # one generated token must still fit

    async def prompt_logprobs(self, ids: list[int], start: int, length: int) -> list[float]:
        """Raw log-probs of ``ids[start:start+length]`` given everything before each token."""
        output = await self.server_manager.generate(
            request_id=self.request_id, prompt_ids=ids, sampling_params=dict(SCORING_SAMPLING_PARAMS)
        )
        table = output.extra_fields.get("prompt_logprobs") if output.extra_fields else None
        if table is None or len(table) < start + length - 1:
            raise RuntimeError(
                "the inference server returned no prompt_logprobs for a scoring request: InfoPO needs a server "
                "that honours sampling_params['prompt_logprobs'] (vLLM does; verl's async trainer modes drop it). "
                "Set algorithm.infopo.info_gain=false to run without information gain."
            )
        # table[j][0] = log p(ids[j + 1] | ids[: j + 1])  ->  token at position k is table[k - 1][0]
        return [float(table[position - 1][0]) for position in range(start, start + length)]

    async def score(self, turns: list[ScoringTurn], full_ids: list[int], source: FactualSource) -> ScoringResult:
        result = ScoringResult(info_gain={})
        scorable = [turn for turn in turns if self.fits(turn.counterfactual_ids)]
        result.skipped = len(turns) - len(scorable)
        if not scorable:
            return result

        counterfactual_requests = [
            self.prompt_logprobs(turn.counterfactual_ids, len(turn.counterfactual_prefix), len(turn.next_turn_ids))
            for turn in scorable
        ]
        result.tokens_submitted += sum(len(turn.counterfactual_ids) for turn in scorable)
        result.requests += len(scorable)

        if source == "rescore":
            scored_prefix = full_ids[: max(turn.next_turn_start + len(turn.next_turn_ids) for turn in scorable)]
            if not self.fits(scored_prefix):
                result.skipped += len(scorable)
                return result
            result.tokens_submitted += len(scored_prefix)
            result.requests += 1
            factual_all, *counterfactual = await asyncio.gather(
                self.prompt_logprobs(scored_prefix, 1, len(scored_prefix) - 1), *counterfactual_requests
            )
            # factual_all[k - 1] is the log-prob of the token at position k
            factual = [
                factual_all[turn.next_turn_start - 1 : turn.next_turn_start - 1 + len(turn.next_turn_ids)]
                for turn in scorable
            ]
        else:
            counterfactual = await asyncio.gather(*counterfactual_requests)
            factual = [turn.rollout_logprobs for turn in scorable]

        for turn, factual_logprobs, counterfactual_logprobs in zip(scorable, factual, counterfactual, strict=True):
            result.info_gain[turn.turn] = information_gain(factual_logprobs, counterfactual_logprobs)
        return result
