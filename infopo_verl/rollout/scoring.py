"""Counterfactual scoring: log-probs of a_{t+1} with the real feedback and with the placeholder (SPEC section 1).

Every log-prob comes from the rollout's own inference server through ``server_manager.generate`` with
``prompt_logprobs=0`` and ``max_tokens=1``: the same engine and weights that sampled the dialogue, raw model
log-probs (temperature 1). ``extra_fields["prompt_logprobs"][j][0]`` is log p(ids[j+1] | ids[:j+1]).

**Where the factual log-probs come from** (``algorithm.infopo.scoring.factual``, :func:`resolve_factual_source`):

- ``rollout``: the log-probs the engine returned while sampling a_{t+1}. Free, but equal to the raw model log-probs
  only when sampling applied no transformation (temperature 1, no top-p / top-k, no repetition penalty) or with
  ``rollout.logprobs_mode=raw_logprobs``. verl's default ``processed_logprobs`` at temperature 0.6 (the paper's
  Qwen3 / ColBench runs) returns log-probs of the *tempered* distribution, which would bias every r_t: asking for
  ``rollout`` there is refused. The sampling pass runs decode kernels and the counterfactual a prefill pass; on bf16
  engines the two may differ systematically (unmeasured on CPU: the GPU check in ``tests/special_e2e`` measures it).
- ``rescore``: one prompt-logprob request over the dialogue up to the end of the last scored a_{t+1} gives the
  factual log-probs of every scored turn at once (a_{t+1}'s factual context is exactly the prefix before it). It is
  always sent uncached: vLLM caches the full blocks of generated tokens too, so a cached read would find a_{t+1}'s
  own rows in cache and the guard below would resend it anyway.
- ``auto``: ``rollout`` when provably raw, else ``rescore`` (the rule before the key existed).

**The counterfactual of turn t** costs one request over ctx_t + placeholder message + a_{t+1}. vLLM skips *reading*
the prefix cache for any request with ``prompt_logprobs`` (``skip_reading_prefix_cache`` defaults to
``prompt_logprobs is not None``), so by default it recomputes ctx_t: sum_t (c_t + phi + L_t) prefill tokens per
dialogue. With ``algorithm.infopo.scoring.prefix_cache=true`` the request sets ``skip_reading_prefix_cache: False``
and ctx_t, already in cache from the dialogue's own generation requests, is read instead of recomputed. The rows of
the h cached leading positions (h = ``extra_fields["num_cached_tokens"]``) are then not computed: vLLM's V1 model
runner leaves them uninitialised in a full-length table, the V2 runner returns a table h rows shorter. Every row r_t
needs (log p of a_{t+1}, rows start - 1 ...) lies after the placeholder, so it was computed whenever h <= start - 1;
otherwise (or when the engine does not report h) the request is resent uncached (counted in ``resent``). When the
engine reports ``extra_fields["prompt_ids"]``, the ids of every row read are checked against the ids sent.

**Pipelined**: :class:`DialogueScorer` sends turn t's counterfactual request as soon as a_{t+1} exists
(:meth:`DialogueScorer.submit`), concurrently with the environment / user-simulator step that answers a_{t+1}; the
dialogue waits at its end only for what is still outstanding (:meth:`DialogueScorer.finish`). A request's result
depends only on the ids it sends, so r_t is the same as scoring everything after the dialogue.

**Request ids**: the dialogue's request id is used for every scoring request, so verl's client routes it to the
server that holds the dialogue's prefix (sticky routing). Without ``rollout.full_determinism`` verl gives each
engine request a fresh id; with it, verl forwards the id unchanged and two in-flight requests of one dialogue would
collide (SGLang refuses a duplicate request id). So under ``full_determinism`` a dialogue's scoring requests are
sent one at a time, after its last generation request has returned (``serial=True``): no overlap with the
simulator in that mode, in exchange for ids that never collide and stay on the dialogue's server.

**Engines** (:func:`scoring_sampling_params`): vLLM gets ``detokenize: False`` (and ``skip_reading_prefix_cache``
when caching); SGLang gets only keys its ``SamplingParams`` accepts, and verl's SGLang wrapper forces
``logprob_start_len=0``, so every SGLang scoring request recomputes its whole context: prefix caching cannot be
selected there.

**Aborts**: a request that comes back aborted (``stop_reason`` ``"aborted"`` from verl's vLLM server, ``"abort"``
from SGLang, after preemption or a paused engine) with no prompt log-probs is retried once; if it is aborted again,
the turns it served are skipped and counted (``skipped``, ``aborted``), never invented and never a crash. A request
longer than ``max_model_len - 1`` is skipped and counted, never truncated. No request ever reaches the user
simulator or the environment.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from infopo_verl.config import ConfigError
from infopo_verl.core.info_gain import information_gain

FactualSource = Literal["rollout", "rescore"]

GREEDY_TEMPERATURE = 1e-5
"""Temperatures below this are greedy. Source: vLLM's ``_SAMPLING_EPS``."""
ABORTED = ("aborted", "abort")
"""``stop_reason`` of an aborted request: verl's vLLM server says ``aborted``, its SGLang server ``abort``."""

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
"""vLLM, uncached: one throw-away generated token; what we want is the prompt log-probs of the raw distribution."""


def scoring_sampling_params(engine: str, *, read_prefix_cache: bool) -> dict[str, Any]:
    """The exact ``sampling_params`` of a scoring request for ``actor_rollout_ref.rollout.name=engine``."""
    params = dict(SCORING_SAMPLING_PARAMS)
    if engine == "sglang":
        # verl's SGLang wrapper pops max_tokens, logprobs and prompt_logprobs and hands every other key to
        # SGLang's SamplingParams, which has no `detokenize` (TypeError) and no per-request cache switch.
        params.pop("detokenize")
        if read_prefix_cache:
            raise ConfigError(
                "algorithm.infopo.scoring.prefix_cache=true needs actor_rollout_ref.rollout.name=vllm: verl's SGLang "
                "server forces logprob_start_len=0, so a scoring request cannot read SGLang's cache. "
                "Set algorithm.infopo.scoring.prefix_cache=false."
            )
    elif read_prefix_cache:
        params["skip_reading_prefix_cache"] = False
    return params


def _untransformed(sampling_params: Mapping[str, Any]) -> bool:
    return (
        float(sampling_params.get("temperature", 1.0)) == 1.0
        and float(sampling_params.get("top_p", 1.0)) >= 1.0
        and int(sampling_params.get("top_k", -1)) in (-1, 0)
        and float(sampling_params.get("repetition_penalty", 1.0)) == 1.0
    )


def factual_source(sampling_params: Mapping[str, Any], logprobs_mode: str | None) -> FactualSource:
    """``auto``: ``rollout`` when the sampling log-probs are provably the raw model log-probs, else ``rescore``."""
    if logprobs_mode == "raw_logprobs":
        return "rollout"
    if logprobs_mode not in (None, "processed_logprobs"):
        return "rescore"  # logits modes return no log-probs of the sampled token
    return "rollout" if _untransformed(sampling_params) else "rescore"


def provably_not_raw(sampling_params: Mapping[str, Any], logprobs_mode: str | None) -> str | None:
    """Why the sampling pass's log-probs are certainly not the raw model's, or None when they may be."""
    if logprobs_mode == "raw_logprobs":
        return None
    if logprobs_mode not in (None, "processed_logprobs"):
        return f"rollout.logprobs_mode={logprobs_mode} returns logits, not log-probs"
    if float(sampling_params.get("repetition_penalty", 1.0)) != 1.0:
        return f"repetition_penalty={sampling_params['repetition_penalty']} changes the sampled distribution"
    if float(sampling_params.get("temperature", 1.0)) < GREEDY_TEMPERATURE:
        return None  # greedy rows: vLLM reports the raw log-softmax (no temperature, top-p or top-k applied)
    if not _untransformed(sampling_params):
        settings = ", ".join(f"{key}={sampling_params.get(key)}" for key in ("temperature", "top_p", "top_k"))
        return f"processed_logprobs at {settings} are log-probs of the transformed distribution"
    return None


def resolve_factual_source(
    choice: str, sampling_params: Mapping[str, Any], logprobs_mode: str | None
) -> FactualSource:
    """Apply ``algorithm.infopo.scoring.factual`` to one rollout's sampling settings."""
    if choice == "rescore":
        return "rescore"
    if choice == "auto":
        return factual_source(sampling_params, logprobs_mode)
    reason = provably_not_raw(sampling_params, logprobs_mode)
    if reason is not None:
        raise ConfigError(
            f"algorithm.infopo.scoring.factual=rollout, but the rollout's log-probs are not raw: {reason}. Every r_t "
            "would be biased. Set actor_rollout_ref.rollout.logprobs_mode=raw_logprobs (exact and free), or "
            "algorithm.infopo.scoring.factual=rescore (or auto)."
        )
    return "rollout"


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
    """Eligible turns not scored: a request would exceed max_model_len - 1 tokens, or was aborted twice."""
    aborted: int = 0
    """Of ``skipped``: turns whose request came back aborted on its retry too."""
    retried: int = 0
    """Requests resent once after coming back aborted."""
    resent: int = 0
    """Cached requests resent uncached because the cache covered a row r_t needs (or h was not reported)."""
    tokens_submitted: int = 0
    """Prompt tokens sent to the server for scoring (factual and counterfactual, retries and resends included)."""
    cached_tokens: int = 0
    """Leading tokens the engine served from its prefix cache, over the responses that were used."""
    requests: int = 0


class _Aborted(Exception):
    """A scoring request came back aborted twice."""


class DialogueScorer:
    """Scores the eligible turns of one dialogue, each as soon as it is submitted (see the module docstring).

    Args:
        server_manager: verl's LLM client (``async generate(request_id, *, prompt_ids, sampling_params)``).
        request_id: the dialogue's request id (sticky routing to the server holding its prefix).
        max_model_len: the engine's context length; a request must leave one token to generate.
        source: ``rollout`` or ``rescore`` (see :func:`resolve_factual_source`).
        engine: ``actor_rollout_ref.rollout.name``.
        prefix_cache: ``algorithm.infopo.scoring.prefix_cache``.
        serial: send one request at a time, after the dialogue (``rollout.full_determinism``).
    """

    def __init__(
        self,
        server_manager: Any,
        request_id: str,
        max_model_len: int,
        *,
        source: FactualSource,
        engine: str = "vllm",
        prefix_cache: bool = False,
        serial: bool = False,
    ):
        self.server_manager = server_manager
        self.request_id = request_id
        self.max_model_len = max_model_len
        self.source = source
        self.serial = serial
        self.cached_params = scoring_sampling_params(engine, read_prefix_cache=True) if prefix_cache else None
        self.uncached_params = scoring_sampling_params(engine, read_prefix_cache=False)
        self.result = ScoringResult(info_gain={})
        self._turns: list[ScoringTurn] = []
        self._pending: dict[int, asyncio.Future[list[float]]] = {}
        self._too_long: set[int] = set()
        """Turns whose counterfactual request would not fit ``max_model_len - 1`` (skipped, counted at the end)."""

    def fits(self, ids: list[int]) -> bool:
        return len(ids) <= self.max_model_len - 1  # one generated token must still fit

    def submit(self, turn: ScoringTurn) -> None:
        """Turn t's a_{t+1} exists: send its counterfactual request now (or queue it, when serial)."""
        if not self.fits(turn.counterfactual_ids):
            self._too_long.add(turn.turn)
            return
        self._turns.append(turn)
        if not self.serial:
            self._pending[turn.turn] = asyncio.ensure_future(self._counterfactual(turn))

    def cancel(self) -> None:
        """Nothing will be read (a failed dialogue): cancel what is still in flight."""
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._turns = []

    def _settle_turns(self, final: list[ScoringTurn]) -> None:
        """Make the submitted turns exactly ``final``, the turns as the finished batch holds them.

        A turn submitted with the same ids keeps its request; one whose tokens changed after it went out (a
        continuous-token builder trimmed a_{t+1} when the next feedback arrived) or that was never submitted is sent
        now; a submitted turn that is not in ``final`` (left out of scoring after all) is cancelled.
        """
        submitted = {turn.turn: turn for turn in self._turns}
        self._turns, self._too_long = [], set()
        for turn in final:
            previous = submitted.pop(turn.turn, None)
            if previous == turn:
                self._turns.append(previous)
                continue
            if previous is not None and turn.turn in self._pending:
                self._pending.pop(turn.turn).cancel()
            self.submit(turn)
        for stale in submitted.values():
            if stale.turn in self._pending:
                self._pending.pop(stale.turn).cancel()

    async def finish(self, full_ids: list[int], final: list[ScoringTurn] | None = None) -> ScoringResult:
        """Wait for every outstanding request; ``full_ids`` is the finished dialogue (prompt + response).

        ``final``: the eligible turns as the finished batch holds them (see :meth:`_settle_turns`); None scores
        exactly what was submitted.
        """
        if final is not None:
            self._settle_turns(final)
        turns, result = self._turns, self.result
        result.skipped += len(self._too_long)
        if not turns:
            return result
        factual_request = None
        if self.source == "rescore":
            scored_prefix = full_ids[: max(turn.next_turn_start + len(turn.next_turn_ids) for turn in turns)]
            if self.fits(scored_prefix):
                factual_request = self._read(scored_prefix, 1, len(scored_prefix) - 1, cached=False)
            else:
                result.skipped += len(turns)
                for future in self._pending.values():
                    future.cancel()
                return result
        if self.serial:
            counterfactual = [await _settle(self._counterfactual(turn)) for turn in turns]
            factual_all = await _settle(factual_request) if factual_request is not None else None
        else:
            outcomes = await asyncio.gather(
                *(_settle(self._pending[turn.turn]) for turn in turns),
                *([_settle(factual_request)] if factual_request is not None else []),
            )
            counterfactual = outcomes[: len(turns)]
            factual_all = outcomes[len(turns)] if factual_request is not None else None

        if isinstance(factual_all, _Aborted):
            result.skipped += len(turns)
            result.aborted += len(turns)
            return result
        for turn, counterfactual_logprobs in zip(turns, counterfactual, strict=True):
            if isinstance(counterfactual_logprobs, _Aborted):
                result.skipped += 1
                result.aborted += 1
                continue
            if factual_all is not None:
                # factual_all[k - 1] is the log-prob of the token at position k
                start = turn.next_turn_start - 1
                factual = factual_all[start : start + len(turn.next_turn_ids)]
            else:
                factual = turn.rollout_logprobs
            result.info_gain[turn.turn] = information_gain(factual, counterfactual_logprobs)
        return result

    async def _counterfactual(self, turn: ScoringTurn) -> list[float]:
        return await self._read(
            turn.counterfactual_ids, len(turn.counterfactual_prefix), len(turn.next_turn_ids),
            cached=self.cached_params is not None,
        )

    async def _send(self, ids: list[int], params: dict[str, Any]) -> Any:
        """One scoring request, retried once if it comes back aborted; raises _Aborted after the second."""
        for attempt in range(2):
            self.result.requests += 1
            self.result.tokens_submitted += len(ids)
            output = await self.server_manager.generate(
                request_id=self.request_id, prompt_ids=ids, sampling_params=dict(params)
            )
            extra = output.extra_fields or {}
            if extra.get("prompt_logprobs") is not None:
                return output
            if output.stop_reason not in ABORTED:
                raise RuntimeError(
                    f"the inference server returned no prompt_logprobs for a scoring request (stop_reason="
                    f"{output.stop_reason!r}, not an abort): InfoPO needs a server that honours "
                    "sampling_params['prompt_logprobs'] (vLLM and SGLang through verl do; verl's async trainer "
                    "modes drop it). Set algorithm.infopo.info_gain=false to run without information gain."
                )
            if attempt == 0:
                self.result.retried += 1
        raise _Aborted()

    async def _read(self, ids: list[int], start: int, length: int, *, cached: bool) -> list[float]:
        """Raw log-probs of ``ids[start:start+length]`` given everything before each token."""
        output = await self._send(ids, self.cached_params if cached else self.uncached_params)
        cached_tokens = output.extra_fields.get("num_cached_tokens")
        if cached and (cached_tokens is None or cached_tokens > start - 1):
            # The cache covered a row we need (its value was never computed), or we cannot tell: resend uncached.
            self.result.resent += 1
            output = await self._send(ids, self.uncached_params)
            cached_tokens = output.extra_fields.get("num_cached_tokens")
        cached_tokens = int(cached_tokens or 0)
        if cached_tokens > start - 1:
            raise RuntimeError(
                f"an uncached scoring request of {len(ids)} tokens came back with num_cached_tokens={cached_tokens}: "
                f"the rows from {start - 1} on may not have been computed; the engine ignored "
                "skip_reading_prefix_cache. Set algorithm.infopo.scoring.prefix_cache=false and report the engine."
            )
        table = output.extra_fields["prompt_logprobs"]
        # V1 runner: full length, rows < h uninitialised. V2 runner: the first h rows are absent.
        if len(table) == len(ids):
            offset = 0
        elif len(table) == len(ids) - cached_tokens:
            offset = cached_tokens
        else:
            raise RuntimeError(
                f"a scoring request of {len(ids)} tokens (num_cached_tokens={cached_tokens}) returned "
                f"{len(table)} prompt_logprobs rows; expected {len(ids)} (full table) or {len(ids) - cached_tokens} "
                "(cached rows left out)"
            )
        self.result.cached_tokens += cached_tokens
        rows = range(start - 1 - offset, start - 1 - offset + length)  # row j scores the token at j + 1 + offset
        returned_ids = output.extra_fields.get("prompt_ids")
        if returned_ids is not None:
            mismatched = [row + offset + 1 for row in rows if int(returned_ids[row][0]) != ids[row + offset + 1]]
            if mismatched:
                raise RuntimeError(
                    f"the engine's prompt_ids disagree with the ids sent at positions {mismatched[:5]} of a "
                    f"{len(ids)}-token scoring request (num_cached_tokens={cached_tokens}): its prompt log-probs "
                    "describe other tokens. Set algorithm.infopo.scoring.prefix_cache=false and report the engine."
                )
        return [float(table[row][0]) for row in rows]


async def _settle(awaitable: Any) -> Any:
    """The awaited value, or the :class:`_Aborted` it raised (every other error propagates)."""
    try:
        return await awaitable
    except _Aborted as aborted:
        return aborted
