"""An in-process CPU stand-in for verl's vLLM rollout server: token ids in, sampled token ids and log-probs out.

:class:`LocalLLMServer` answers ``await generate(request_id, prompt_ids=..., sampling_params=...)`` with verl's
``TokenOutput``, the call verl's agent loops make on ``server_manager`` / ``llm_client``. It runs a real Hugging Face
causal LM on CPU. It is the only fake in the end-to-end tests, so it follows what verl 0.9.1's
``vLLMHttpServer.generate`` and vLLM V1 do, point by point:

- Length: a prompt that leaves no room to generate (``len(prompt_ids) >= max_model_len``) is refused with a
  ``ValueError`` naming both lengths; otherwise ``max_tokens`` (or sglang-style ``max_new_tokens``; default: all the
  room left) is clamped to ``max_model_len - len(prompt_ids)``, exactly as verl's server does before calling vLLM.
- Stopping: at any eos id (the tokenizer's eos plus ``generation_config.eos_token_id``, e.g. ``<|im_end|>`` and
  ``<|endoftext|>``) unless ``ignore_eos``, at ``stop_token_ids``, or after ``max_tokens``. The stop token IS part of
  ``token_ids`` (vLLM keeps it; verl's Qwen continuous-token builder then inserts the template's ``"\\n"``).
  ``stop_reason`` is ``"completed"`` for both stop and length, as verl maps vLLM's finish reasons.
- Sampling: vLLM's order: repetition penalty on the raw logits, then temperature, then top-k, then top-p (smallest
  set of tokens whose probability reaches top_p), then a multinomial draw. ``temperature == 0`` (below 1e-5, vLLM's
  threshold) is greedy argmax. ``top_k`` of -1 or 0 and ``top_p`` of 1 disable those filters.
- ``log_probs`` (only when ``sampling_params["logprobs"]`` is truthy, as verl asks): ``logprobs_mode`` chooses them
  like verl's ``actor_rollout_ref.rollout.logprobs_mode``. The default is verl's default, ``"processed_logprobs"``:
  the log-probability of each sampled token under the distribution it was actually drawn from (after penalty,
  temperature, top-k, top-p, renormalised); for greedy requests that is the log-softmax of the raw logits (vLLM
  applies no temperature to greedy rows). ``"raw_logprobs"`` gives the raw model's log-softmax (temperature 1) at
  every sampled token. At temperature 1 without top-k/top-p the two agree.
- ``prompt_logprobs`` (``sampling_params["prompt_logprobs"] = k``, an int): always raw model log-probs (temperature
  1; vLLM computes them before any sampling step). ``extra_fields["prompt_logprobs"]`` has ``len(prompt_ids)``
  elements; element ``j < len-1`` is ``[log p(prompt_ids[j+1] | prompt_ids[:j+1])]`` when k is 0, or the top-k
  log-probs at that position by rank when k > 0 (``extra_fields["prompt_ids"][j]`` holds the matching ids); the last
  element is the dummy ``[0.0] * max(k, 1)`` that verl's ``extract_prompt_logprobs`` pads for the last prompt token.
  So element j describes token j+1 and the last element carries no information (SPEC section 3).
- Determinism: a per-request ``sampling_params["seed"]`` seeds that request's draws, as in vLLM. Without one, the
  seed is derived from the server's ``seed``, the prompt ids and how many earlier requests had the same prompt:
  the k-th sample of a prompt is the same in every run, however concurrent requests interleave.
- Concurrency: ``generate`` is a coroutine; each request's forward passes run in a worker thread under a lock, so
  any number of concurrent requests are safe and the event loop stays free. Requests are not batched together.

Sampling parameters vLLM knows that this server does not emulate are refused when set to a non-neutral value, and
unknown keys are refused, as vLLM's ``SamplingParams`` would: a silently ignored setting would make a test pass for
the wrong reason.

**Automatic prefix caching: the cost model.** The server keeps vLLM's block cache and counts the prefill tokens
vLLM would compute for each request (``requests_log``, ``prefill_tokens_computed``). What it models, read from
vLLM's released code (vllm-project/vllm: ``vllm/sampling_params.py``, ``vllm/v1/request.py``,
``vllm/v1/core/kv_cache_manager.py``, ``vllm/v1/worker/gpu_model_runner.py``,
``vllm/v1/worker/gpu/sample/prompt_logprob.py``) and verl 0.9.1's ``vLLMHttpServer.generate``:

- Blocks of ``BLOCK_SIZE`` = 16 tokens (vLLM's default on CUDA); only *full* blocks are cached, each keyed by a
  hash chained over every token before it, so a hit is always a whole-block prefix of the request. A hit never
  covers the last prompt token (``get_computed_blocks`` caps it at ``num_tokens - 1``: the last position must be
  computed to sample), so h = 16 * (matching leading full blocks within ``len(prompt) - 1``).
- ``SamplingParams.skip_reading_prefix_cache`` defaults to ``prompt_logprobs is not None`` (set in
  ``SamplingParams.__post_init__``; the Request copies it), and ``get_computed_blocks`` then returns 0 cached
  tokens: a scoring request recomputes everything unless it sets ``skip_reading_prefix_cache: False``.
- Every request still *writes* its computed full blocks: the prompt and the generated tokens whose KV was computed
  (all but the last sampled token). A later request of the same dialogue finds them.
- ``extra_fields["num_cached_tokens"]`` = h (verl copies ``RequestOutput.num_cached_tokens``).
- Prompt-logprob tables when h > 0 (``runner``): ``"v1"``, the GPU model runner: a table of
  ``len(prompt) - 1`` rows is allocated with ``torch.empty`` and only rows from ``num_computed_tokens`` = h on are
  written, so verl's list keeps its full length and its first h elements are uninitialised memory. Here they hold
  seeded random values and ids (garbage that a wrong read turns into a wrong r_t). ``"v2"``, the newer model runner
  (``PromptLogprobsWorker``): only the scheduled rows are computed and concatenated, so the list is h elements
  shorter and element i describes token h + i + 1.
- No eviction (an unbounded cache: the most favourable case for caching), no chunked prefill, no batching.

The CPU forward pass itself always runs over the whole prompt (it is the reference arithmetic); the counters say
what vLLM would have computed. ``engine="sglang"`` models verl's SGLang wrapper instead: it forwards the keys left
after it pops ``max_tokens``/``logprobs``/``prompt_logprobs`` into SGLang's ``SamplingParams``, which refuses
unknown keys (``TypeError``: ``detokenize``, ``seed``, ``skip_reading_prefix_cache``); it forces
``logprob_start_len=0``, so a prompt-logprob request reads no cache; two in-flight requests with one id are
refused ("Duplicate request ID"), and an aborted request reports ``stop_reason="abort"`` (vLLM through verl:
``"aborted"``). :meth:`abort_next` makes the next requests come back aborted, as a preempted or paused engine's do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from verl.workers.rollout.replica import TokenOutput

__all__ = ["LocalLLMServer", "RequestRecord", "BLOCK_SIZE"]

GREEDY_TEMPERATURE = 1e-5
"""Temperatures below this are greedy. Source: vLLM's ``_SAMPLING_EPS``."""
LOGPROBS_MODES = ("processed_logprobs", "raw_logprobs")
BLOCK_SIZE = 16
"""Tokens per KV-cache block. Source: vLLM's default ``block_size`` on CUDA."""
Runner = Literal["v1", "v2"]
Engine = Literal["vllm", "sglang"]

# vLLM SamplingParams keys this server accepts only at their neutral value (it does not emulate them).
_NEUTRAL = {
    "n": 1,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "min_p": 0.0,
    "min_tokens": 0,
    "stop": None,
    "bad_words": None,
    "logit_bias": None,
    "allowed_token_ids": None,
}
# Keys that only change text output, which a token-in-token-out server does not produce.
_TEXT_ONLY = {"detokenize", "skip_special_tokens", "spaces_between_special_tokens", "include_stop_str_in_output",
              "output_kind"}
_IMPLEMENTED = {"temperature", "top_p", "top_k", "repetition_penalty", "max_tokens", "max_new_tokens", "logprobs",
                "prompt_logprobs", "seed", "ignore_eos", "stop_token_ids", "skip_reading_prefix_cache"}
# What verl's SGLang wrapper accepts: the keys it pops itself, then SGLang SamplingParams' own arguments.
_SGLANG_KEYS = {"max_tokens", "max_new_tokens", "logprobs", "prompt_logprobs", "temperature", "top_p", "top_k",
                "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty", "min_new_tokens", "stop",
                "stop_token_ids", "ignore_eos", "skip_special_tokens", "spaces_between_special_tokens", "no_stop_trim",
                "n", "logit_bias", "sampling_seed", "stream_interval", "custom_params"}


@dataclasses.dataclass
class RequestRecord:
    """What one request cost, as vLLM would count it."""

    request_id: str
    prompt_tokens: int
    cached_tokens: int
    """h: leading prompt tokens served from the prefix cache (a multiple of BLOCK_SIZE)."""
    prompt_logprobs: bool
    generated_tokens: int = 0
    aborted: bool = False

    @property
    def computed_prefill_tokens(self) -> int:
        return 0 if self.aborted else self.prompt_tokens - self.cached_tokens


class LocalLLMServer:
    """Serve one causal LM in-process with verl's ``generate`` contract (see the module docstring).

    Args:
        model: a model directory (loaded with ``AutoModelForCausalLM`` / ``AutoTokenizer`` in float32) or a
            ``(model, tokenizer)`` pair, used as is (the caller may keep training it: every request reads the
            current weights, like a rollout engine after a weight sync).
        max_model_len: the context length the server enforces (verl's ``rollout.max_model_len``).
        seed: base seed for requests without their own ``seed``.
        logprobs_mode: ``"processed_logprobs"`` (verl's default) or ``"raw_logprobs"``.
        prefix_caching: vLLM's ``enable_prefix_caching`` (on by default in vLLM V1).
        runner: prompt-logprob table shape when the cache served h > 0 tokens: ``"v1"`` or ``"v2"`` (see above).
        engine: ``"vllm"`` or ``"sglang"`` (verl's SGLang wrapper's key handling, ids and abort reason).
        reject_duplicate_request_ids: refuse a request whose id is already in flight (always on for SGLang).
    """

    def __init__(
        self,
        model: str | os.PathLike | tuple[PreTrainedModel, PreTrainedTokenizerBase],
        max_model_len: int,
        *,
        seed: int = 0,
        logprobs_mode: str = "processed_logprobs",
        prefix_caching: bool = True,
        runner: Runner = "v1",
        engine: Engine = "vllm",
        reject_duplicate_request_ids: bool = False,
    ):
        if isinstance(model, tuple):
            self.model, self.tokenizer = model
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(str(model))
            self.model = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
        self.model.eval()
        if not isinstance(max_model_len, int) or max_model_len < 2:
            raise ValueError(f"max_model_len must be an integer >= 2, got {max_model_len!r}")
        if logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode must be one of {', '.join(LOGPROBS_MODES)}, got {logprobs_mode!r}")
        if runner not in ("v1", "v2") or engine not in ("vllm", "sglang"):
            raise ValueError(f"runner must be v1 or v2 and engine vllm or sglang, got {runner!r}, {engine!r}")
        self.max_model_len = max_model_len
        self.seed = seed
        self.logprobs_mode = logprobs_mode
        self.prefix_caching = prefix_caching
        self.runner = runner
        self.engine = engine
        self.reject_duplicate_request_ids = reject_duplicate_request_ids or engine == "sglang"
        self.eos_token_ids = self._eos_token_ids()
        self._lock = threading.Lock()
        self._prompt_counts: Counter[str] = Counter()
        self.num_requests = 0
        self.requests_log: list[RequestRecord] = []
        self._cached_blocks: set[int] = set()
        self._in_flight: Counter[str] = Counter()
        self._aborts_pending = 0
        self._abort_only_scoring = True

    @property
    def prefill_tokens_computed(self) -> int:
        """Prompt tokens vLLM would have run through the model over every request so far."""
        return sum(record.computed_prefill_tokens for record in self.requests_log)

    def abort_next(self, count: int, *, only_prompt_logprobs: bool = True) -> None:
        """Make the next ``count`` requests (only scoring requests by default) come back aborted."""
        self._aborts_pending = count
        self._abort_only_scoring = only_prompt_logprobs

    def clear_cache(self) -> None:
        """Drop every cached block (vLLM's ``reset_prefix_cache``)."""
        self._cached_blocks.clear()

    def _cached_prefix_tokens(self, prompt: list[int]) -> int:
        """h: the cached whole-block prefix of ``prompt``, never covering its last token."""
        hits = 0
        for block_hash in _block_hashes(prompt[: len(prompt) - 1]):
            if block_hash not in self._cached_blocks:
                break
            hits += 1
        return hits * BLOCK_SIZE

    def _eos_token_ids(self) -> frozenset[int]:
        ids = set()
        generation_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        for value in (self.tokenizer.eos_token_id, generation_eos, self.model.config.eos_token_id):
            if value is None:
                continue
            ids.update(value if isinstance(value, (list, tuple)) else [value])
        return frozenset(int(i) for i in ids)

    async def generate(
        self,
        request_id: str,
        *,
        prompt_ids: list[int],
        sampling_params: Mapping[str, Any],
        image_data: Any = None,
        video_data: Any = None,
        **kwargs: Any,
    ) -> TokenOutput:
        """Sample a continuation of ``prompt_ids`` (a list of ints); see the module docstring for every rule.

        Returns ``TokenOutput(token_ids=(n,), log_probs=(n,) or None, stop_reason="completed",
        extra_fields={"prompt_logprobs": (len(prompt_ids), max(k, 1)), "prompt_ids": same shape} when asked)``.
        """
        if image_data is not None or video_data is not None or kwargs.get("audio_data") is not None:
            raise ValueError(f"request {request_id}: LocalLLMServer serves a text-only model; got multimodal data")
        prompt = [int(token) for token in prompt_ids]
        if not prompt:
            raise ValueError(f"request {request_id}: prompt_ids is empty")
        vocab = self.model.config.vocab_size
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValueError(f"request {request_id}: prompt_ids hold a token id outside [0, {vocab})")
        if self.engine == "sglang":
            sampling_params = _sglang_params(dict(sampling_params))
        params = self._parse(request_id, dict(sampling_params), len(prompt))
        if self.reject_duplicate_request_ids and self._in_flight[request_id]:
            raise ValueError(f"Duplicate request ID: {request_id} is already in flight on this server")
        if params["seed"] is None:
            # Derived at call time, before any await, so it depends on what was asked, not on thread timing.
            key = hashlib.sha256(repr(prompt).encode()).hexdigest()
            occurrence = self._prompt_counts[key]
            self._prompt_counts[key] += 1
            params["seed"] = int.from_bytes(hashlib.sha256(f"{self.seed}:{key}:{occurrence}".encode()).digest()[:8], "little")
        self.num_requests += 1
        scoring = params["prompt_logprobs"] is not None
        skip_reading = params["skip_reading_prefix_cache"]
        if skip_reading is None or self.engine == "sglang":  # SGLang: logprob_start_len=0 disables prefix reuse
            skip_reading = scoring
        cached = 0 if skip_reading or not self.prefix_caching else self._cached_prefix_tokens(prompt)
        record = RequestRecord(request_id, len(prompt), cached, scoring)
        self.requests_log.append(record)
        if self._aborts_pending and (scoring or not self._abort_only_scoring):
            self._aborts_pending -= 1
            record.aborted = True
            return TokenOutput(token_ids=[], log_probs=None, stop_reason="abort" if self.engine == "sglang"
                               else "aborted", extra_fields={})
        self._in_flight[request_id] += 1
        try:
            output = await asyncio.to_thread(self._generate_locked, prompt, params, cached)
        finally:
            self._in_flight[request_id] -= 1
        record.generated_tokens = len(output.token_ids)
        if self.prefix_caching:
            # KV exists for the prompt and every generated token but the last (never fed back).
            self._cached_blocks.update(_block_hashes(prompt + list(output.token_ids)[:-1]))
        return output

    def _parse(self, request_id: str, params: dict[str, Any], prompt_len: int) -> dict[str, Any]:
        """Validate ``sampling_params`` like vLLM and verl's server wrapper; return the resolved settings."""
        unknown = sorted(set(params) - _IMPLEMENTED - _TEXT_ONLY - set(_NEUTRAL))
        if unknown:
            raise ValueError(f"request {request_id}: unknown sampling_params key(s) {unknown}")
        for key, neutral in _NEUTRAL.items():
            if key in params and params[key] not in (neutral, None) and params[key] != [] and params[key] != {}:
                raise NotImplementedError(
                    f"request {request_id}: sampling_params[{key!r}]={params[key]!r} is not emulated by "
                    f"LocalLLMServer (only {neutral!r})"
                )
        room = self.max_model_len - prompt_len
        if room < 1:
            raise ValueError(
                f"request {request_id}: prompt length ({prompt_len}) leaves no room to generate within the model's "
                f"maximum context length (max_model_len={self.max_model_len}); need at least 1 token of headroom"
            )
        max_tokens = params.get("max_tokens", params.get("max_new_tokens"))
        max_tokens = room if max_tokens is None else int(max_tokens)
        if max_tokens < 1:
            raise ValueError(f"request {request_id}: max_tokens must be >= 1, got {max_tokens}")
        temperature = float(params.get("temperature", 1.0))
        top_p = float(params.get("top_p", 1.0))
        top_k = params.get("top_k", -1)
        top_k = -1 if top_k is None else int(top_k)
        repetition_penalty = float(params.get("repetition_penalty", 1.0))
        if temperature < 0 or not 0 < top_p <= 1 or top_k < -1 or repetition_penalty <= 0:
            raise ValueError(
                f"request {request_id}: bad sampling_params temperature={temperature} (>= 0), top_p={top_p} "
                f"(in (0, 1]), top_k={top_k} (-1, 0 or >= 1), repetition_penalty={repetition_penalty} (> 0)"
            )
        prompt_logprobs = params.get("prompt_logprobs")
        if prompt_logprobs is not None and (isinstance(prompt_logprobs, bool) or int(prompt_logprobs) < 0):
            raise ValueError(f"request {request_id}: prompt_logprobs must be None or an int >= 0, got {prompt_logprobs!r}")
        return {
            "max_tokens": min(max_tokens, room),  # verl clamps to the room left, it does not refuse
            "temperature": temperature,
            "top_p": top_p,
            "top_k": top_k if top_k > 0 else 0,
            "repetition_penalty": repetition_penalty,
            "logprobs": bool(params.get("logprobs")),
            "prompt_logprobs": None if prompt_logprobs is None else int(prompt_logprobs),
            "ignore_eos": bool(params.get("ignore_eos", False)),
            "stop_token_ids": frozenset(int(i) for i in params.get("stop_token_ids") or ()),
            "seed": None if params.get("seed") is None else int(params["seed"]),
            "skip_reading_prefix_cache": (None if params.get("skip_reading_prefix_cache") is None
                                          else bool(params["skip_reading_prefix_cache"])),
        }

    def _generate_locked(self, prompt: list[int], params: dict[str, Any], cached: int) -> TokenOutput:
        with self._lock, torch.no_grad():
            return self._generate(prompt, params, cached)

    def _generate(self, prompt: list[int], params: dict[str, Any], cached: int) -> TokenOutput:
        generator = torch.Generator().manual_seed(params["seed"])
        input_ids = torch.tensor([prompt], dtype=torch.long)  # [1, P]
        output = self.model(input_ids=input_ids, use_cache=True)
        logits = output.logits[0].float()  # [P, vocab]
        extra_fields: dict[str, Any] = {} if self.engine == "sglang" else {"num_cached_tokens": cached}
        if params["prompt_logprobs"] is not None:
            table = _prompt_logprobs(logits, prompt, params["prompt_logprobs"])
            if cached:
                table = self._uncomputed_rows(table, cached, torch.Generator().manual_seed(params["seed"] + 1))
            extra_fields.update(table)
        past = output.past_key_values
        next_logits = logits[-1]  # [vocab]
        history = list(prompt)
        token_ids: list[int] = []
        log_probs: list[float] = []
        stop_ids = params["stop_token_ids"] | (frozenset() if params["ignore_eos"] else self.eos_token_ids)
        for _ in range(params["max_tokens"]):
            token, log_prob = self._sample(next_logits, history, params, generator)
            token_ids.append(token)
            log_probs.append(log_prob)
            history.append(token)
            if token in stop_ids or len(token_ids) == params["max_tokens"]:
                break
            output = self.model(input_ids=torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past = output.past_key_values
            next_logits = output.logits[0, -1].float()  # [vocab]
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs if params["logprobs"] else None,
            stop_reason="completed",
            extra_fields=extra_fields,
        )

    def _uncomputed_rows(self, table: dict[str, list], cached: int, generator: torch.Generator) -> dict[str, list]:
        """The rows of the ``cached`` leading positions were never computed: garbage (V1) or absent (V2)."""
        if self.runner == "v2":
            return {key: rows[cached:] for key, rows in table.items()}
        width = len(table["prompt_logprobs"][0])
        values = (torch.rand(cached, width, generator=generator) * -20.0).tolist()  # [h, width], logprob-like
        ids = torch.randint(0, self.model.config.vocab_size, (cached, width), generator=generator).tolist()
        return {"prompt_logprobs": values + table["prompt_logprobs"][cached:], "prompt_ids": ids + table["prompt_ids"][cached:]}

    def _sample(self, raw_logits: torch.Tensor, history: list[int], params: dict[str, Any],
                generator: torch.Generator) -> tuple[int, float]:
        """Draw one token from ``raw_logits`` ``(vocab,)``; return it with its log-prob per ``logprobs_mode``."""
        logits = raw_logits
        if params["repetition_penalty"] != 1.0:
            # vLLM/HF rule: seen tokens' positive logits are divided by the penalty, negative ones multiplied.
            seen = torch.tensor(sorted(set(history)), dtype=torch.long)
            penalised = logits[seen]
            logits = logits.clone()
            logits[seen] = torch.where(penalised > 0, penalised / params["repetition_penalty"],
                                       penalised * params["repetition_penalty"])
        if params["temperature"] < GREEDY_TEMPERATURE:
            token = int(torch.argmax(logits))
            processed = torch.log_softmax(logits, dim=-1)
        else:
            scaled = logits / params["temperature"]
            scaled = _top_k_top_p(scaled, params["top_k"], params["top_p"])
            processed = torch.log_softmax(scaled, dim=-1)  # [vocab], -inf outside the kept set
            token = int(torch.multinomial(processed.exp(), 1, generator=generator))
        if self.logprobs_mode == "raw_logprobs":
            return token, float(torch.log_softmax(raw_logits, dim=-1)[token])
        return token, float(processed[token])


def _block_hashes(ids: list[int]) -> list[int]:
    """One hash per full block of ``ids``, each chained over every token before it (vLLM's block hash chain)."""
    hashes, previous = [], None
    for start in range(0, len(ids) - BLOCK_SIZE + 1, BLOCK_SIZE):
        previous = hash((previous, tuple(ids[start : start + BLOCK_SIZE])))
        hashes.append(previous)
    return hashes


def _sglang_params(params: dict[str, Any]) -> dict[str, Any]:
    """What verl's SGLang wrapper hands on: unknown keys raise ``TypeError`` as SGLang's SamplingParams does."""
    for key in params:
        if key not in _SGLANG_KEYS:
            raise TypeError(f"SamplingParams.__init__() got an unexpected keyword argument '{key}' (SGLang)")
    if "sampling_seed" in params:
        params["seed"] = params.pop("sampling_seed")
    return params


def _top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask ``logits`` ``(vocab,)`` to -inf outside the top-k tokens, then outside the top-p nucleus."""
    if top_k and top_k < logits.numel():
        threshold = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)  # [vocab]
        probs = torch.softmax(sorted_logits, dim=-1)
        # keep a token while the probability mass before it is below top_p (so the top token is always kept)
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop = mass_before >= top_p
        logits = logits.clone()
        logits[order[drop]] = float("-inf")
    return logits


def _prompt_logprobs(logits: torch.Tensor, prompt: list[int], k: int) -> dict[str, list[list[float]] | list[list[int]]]:
    """verl's ``extract_prompt_logprobs`` layout from the prompt's raw logits ``(P, vocab)``.

    Element j < P-1 scores token j+1; the last element is verl's dummy ``[0.0] * max(k, 1)``.
    """
    log_probs = torch.log_softmax(logits[:-1], dim=-1)  # [P-1, vocab]: row j predicts prompt[j+1]
    targets = torch.tensor(prompt[1:], dtype=torch.long)  # [P-1]
    if k == 0:
        values = log_probs.gather(1, targets[:, None]).tolist()  # [P-1, 1]
        ids = targets[:, None].tolist()
    else:
        top = torch.topk(log_probs, min(k, log_probs.shape[-1]), dim=-1)  # [P-1, k], rank order
        values, ids = top.values.tolist(), top.indices.tolist()
    width = max(k, 1)
    return {"prompt_logprobs": values + [[0.0] * width], "prompt_ids": ids + [[0] * width]}
