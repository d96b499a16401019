"""Typed, validated view of ``algorithm.infopo``: the one config section every InfoPO component reads.

verl hands the advantage estimator only the ``algorithm`` section, so the estimator, the reward manager and the
agent loop all read their settings from ``algorithm.infopo`` (SPEC section 2). This module turns that section into
frozen dataclasses at the boundary; nothing past the boundary sees a Hydra object.

It imports neither verl, Ray nor Hydra: any mapping with ``.get``/``keys`` (a ``dict`` or an OmegaConf
``DictConfig``) is accepted, so the pure-math tests and the CLI use it without verl.

Every error names the full config key and what to set instead.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["InfoPOConfig", "ScoringConfig", "UserSimulatorConfig", "ConfigError", "SECTION"]

SECTION = "algorithm.infopo"

Normalization = Literal["turn", "token"]
UserBackend = Literal["scripted", "openai", "policy"]
FactualChoice = Literal["auto", "rollout", "rescore"]


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range; the message names the key and the fix."""


def _plain(value: Any) -> Any:
    """Turn an OmegaConf node (or anything mapping-like) into plain Python containers, without importing OmegaConf."""
    if isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "__getitem__")):
        return {str(key): _plain(value[key]) for key in value.keys()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(item) for item in value]
    return value


def _check_type(key: str, value: Any, expected: type | tuple[type, ...]) -> Any:
    """Return ``value`` if it is of type ``expected``; a boolean never passes for a number (YAML ``beta: true``)."""
    expected = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        names = " or ".join(t.__name__ for t in expected)
        raise ConfigError(f"{key} must be a {names}, got {value!r} ({type(value).__name__})")
    return value


def _build(cls: type, values: Mapping[str, Any] | None, prefix: str) -> Any:
    """Build the dataclass ``cls`` from ``values``, refusing unknown keys (a typo must not silently fall back)."""
    values = _plain(values) if values is not None else {}
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix} must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(f'{prefix}.{k}' for k in unknown)}; known keys are: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in values.items():
        if value is None:
            continue  # null in YAML means "keep the default"
        nested = fields[name].metadata.get("nested")
        kwargs[name] = _build(nested, value, f"{prefix}.{name}") if nested else value
    instance = cls(**kwargs)
    instance.validate(prefix)
    return instance


@dataclasses.dataclass(frozen=True)
class UserSimulatorConfig:
    """Who plays the user (SPEC section 4). Lives at ``algorithm.infopo.user``."""

    backend: UserBackend = "scripted"
    """`scripted` (rules, no model), `openai` (any OpenAI-compatible endpoint) or `policy` (the rollout's own
    inference servers). Ours: scripted, so the default needs no key and no network."""
    base_url: str | None = None
    """OpenAI-compatible base URL, e.g. ``http://localhost:8000/v1``; None uses the ``openai`` client's default."""
    model: str = "gpt-4o-mini"
    """Model name sent to the endpoint. Source: the paper's training user simulator (SPEC section 1)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable holding the key. The key itself never appears in config, logs or dumps."""
    temperature: float = 0.0
    """Sampling temperature of the simulator. Ours: 0, so the same question gets the same answer."""
    max_tokens: int = 512
    """Upper bound on one simulator reply, in tokens. Ours."""
    timeout_s: float = 60.0
    """Per-request timeout in seconds. Ours."""
    max_retries: int = 3
    """Retries after the first attempt, with exponential backoff, before the dialogue ends with a failure. Ours."""
    backoff_s: float = 1.0
    """First backoff delay in seconds; doubles on each retry. Ours."""
    max_concurrency: int = 64
    """Simulator requests in flight at once, per agent-loop worker process. Ours."""

    def validate(self, prefix: str) -> None:
        if self.backend not in ("scripted", "openai", "policy"):
            raise ConfigError(f"{prefix}.backend must be one of scripted, openai, policy (got {self.backend!r})")
        for name, positive in (("temperature", False), ("timeout_s", True), ("backoff_s", False)):
            value = _check_type(f"{prefix}.{name}", getattr(self, name), (int, float))
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise ConfigError(f"{prefix}.{name} must be a finite number {'>' if positive else '>='} 0 (got {value!r})")
        for name, low in (("max_tokens", 1), ("max_retries", 0), ("max_concurrency", 1)):
            value = _check_type(f"{prefix}.{name}", getattr(self, name), int)
            if value < low:
                raise ConfigError(f"{prefix}.{name} must be an integer >= {low} (got {value})")
        _check_type(f"{prefix}.api_key_env", self.api_key_env, str)
        _check_type(f"{prefix}.model", self.model, str)


@dataclasses.dataclass(frozen=True)
class ScoringConfig:
    """Which rollouts and turns are scored for information gain, and how the scoring requests are sent
    (:mod:`infopo_verl.rollout.scoring`). Lives at ``algorithm.infopo.scoring``."""

    validation: bool = False
    """Score validation rollouts too. Ours: false, so validation is outcome-only (``rm_scores`` holds R alone and
    ``val-core/*/reward`` compares with a GRPO baseline's) and spends no scoring pass."""
    env_errors: bool = True
    """Score turns whose feedback is the environment's own error message (a malformed tool call, a plain-text turn
    where a tool call is needed, an unknown choice). True reproduces the released code, which scores every turn
    that received feedback (SPEC section 1); false leaves those turns out of scoring, counted."""
    prefix_cache: bool = False
    """Let scoring requests read vLLM's prefix cache (``skip_reading_prefix_cache: false``), with a guard that
    resends a request uncached when the cache covered a row r_t needs. Ours: false (vLLM's documented behaviour
    for prompt_logprobs requests) until a GPU run has shown cached and uncached r_t agree."""
    factual: FactualChoice = "auto"
    """Where log pi(a_{t+1} | ctx_t, o_t) comes from: `rollout` (the sampling pass's log-probs; refused when they
    are provably not raw), `rescore` (one prompt-logprob request over the dialogue), `auto` (rollout when provably
    raw, else rescore). Ours: auto."""

    def validate(self, prefix: str) -> None:
        for name in ("validation", "env_errors", "prefix_cache"):
            _check_type(f"{prefix}.{name}", getattr(self, name), bool)
        if self.factual not in ("auto", "rollout", "rescore"):
            raise ConfigError(f"{prefix}.factual must be one of auto, rollout, rescore (got {self.factual!r})")


@dataclasses.dataclass(frozen=True)
class InfoPOConfig:
    """All of InfoPO's settings, read from ``algorithm.infopo`` (plus the two verl keys it must honour).

    Defaults are the paper's equations (SPEC section 1); the recipes override them with the released-run values.
    """

    beta: float = 0.5
    """Weight of the information advantage in the fusion. Source: paper's UserGym run (SPEC table)."""
    gate_temperature: float = 0.5
    """T in gate = sigmoid(-std_g(R) / T). Source: paper's UserGym run (SPEC table)."""
    placeholder: str = "No information found."
    """Text that replaces the feedback o_t in the counterfactual. Source: paper / released code."""
    normalization: Normalization = "turn"
    """`turn`: the paper's equations (one r_t per turn, group-normalised over turns). `token`: the released
    code's parity mode (r_t / L_t on every token, group-normalised over non-zero tokens). Source: SPEC section 1."""
    magnitude_bound: bool = False
    """Scale A_info by min(1, max(std(A_ext), 1) / std(A_info)) over the batch (released code). Default off."""
    gate: bool = True
    """Ablation switch: false sets gate_g = 1 for every group. Source: paper's ablation."""
    intrinsic_only: bool = False
    """Ablation switch: true makes the advantage m * A_info alone (no outcome term, no beta, no gate)."""
    eps: float = 1e-6
    """Added to every group std before dividing. Source: verl GRPO's epsilon, so beta 0 reproduces it."""
    info_gain: bool = True
    """Measure information gain in the rollout. False runs the identical rollout without scoring (GRPO baseline)."""
    max_tokens_per_turn: int = 1024
    """Upper bound on one agent turn, in tokens. Source: paper's runs (SPEC table)."""
    user: UserSimulatorConfig = dataclasses.field(
        default_factory=UserSimulatorConfig, metadata={"nested": UserSimulatorConfig}
    )
    """Who plays the user: see :class:`UserSimulatorConfig`."""
    env: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Options for the task environments (e.g. ``travel_db_path``); each environment validates its own keys."""
    scoring: ScoringConfig = dataclasses.field(default_factory=ScoringConfig, metadata={"nested": ScoringConfig})
    """Which rollouts and turns are scored, and how: see :class:`ScoringConfig`."""
    train_on_failures: bool = False
    """Train on dialogues that ended on a user-simulator failure or an aborted generation, with outcome 0 (the
    behaviour before this option existed). Ours: false, their ``response_mask`` is all zero (no loss), so a
    simulator fault never becomes a negative advantage."""

    # Not under algorithm.infopo: verl's own keys that change InfoPO's math, copied in at the boundary.
    norm_adv_by_std_in_grpo: bool = True
    """``algorithm.norm_adv_by_std_in_grpo``: false drops the division by (std + eps) in A_ext and A_info."""

    def validate(self, prefix: str = SECTION) -> None:
        beta = _check_type(f"{prefix}.beta", self.beta, (int, float))
        if not math.isfinite(beta) or beta < 0:
            raise ConfigError(f"{prefix}.beta must be a finite number >= 0 (got {beta!r}); 0 reproduces GRPO")
        temperature = _check_type(f"{prefix}.gate_temperature", self.gate_temperature, (int, float))
        if not math.isfinite(temperature) or temperature <= 0:
            raise ConfigError(
                f"{prefix}.gate_temperature must be a finite number > 0 (got {temperature!r}); "
                f"to disable the gate set {prefix}.gate=false instead"
            )
        eps = _check_type(f"{prefix}.eps", self.eps, (int, float))
        if not math.isfinite(eps) or eps <= 0:
            raise ConfigError(f"{prefix}.eps must be a small finite number > 0 (got {eps!r}); verl's GRPO uses 1e-6")
        if self.normalization not in ("turn", "token"):
            raise ConfigError(
                f"{prefix}.normalization must be 'turn' (paper equations) or 'token' (released-code parity), "
                f"got {self.normalization!r}"
            )
        for name in ("magnitude_bound", "gate", "intrinsic_only", "info_gain", "train_on_failures"):
            _check_type(f"{prefix}.{name}", getattr(self, name), bool)
        _check_type("algorithm.norm_adv_by_std_in_grpo", self.norm_adv_by_std_in_grpo, bool)
        placeholder = _check_type(f"{prefix}.placeholder", self.placeholder, str)
        if not placeholder.strip():
            raise ConfigError(f"{prefix}.placeholder must be non-empty text (default 'No information found.')")
        if _check_type(f"{prefix}.max_tokens_per_turn", self.max_tokens_per_turn, int) < 1:
            raise ConfigError(f"{prefix}.max_tokens_per_turn must be >= 1 (got {self.max_tokens_per_turn})")
        _check_type(f"{prefix}.env", self.env, dict)

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None, *, norm_adv_by_std_in_grpo: bool = True) -> InfoPOConfig:
        """Build from the ``algorithm.infopo`` mapping alone (None or empty: all defaults)."""
        values = dict(_plain(section) or {})
        if "norm_adv_by_std_in_grpo" in values:
            raise ConfigError(
                f"{SECTION}.norm_adv_by_std_in_grpo is not an InfoPO key; set algorithm.norm_adv_by_std_in_grpo"
            )
        values["norm_adv_by_std_in_grpo"] = norm_adv_by_std_in_grpo
        return _build(cls, values, SECTION)

    @classmethod
    def from_algorithm(cls, algorithm: Mapping[str, Any] | None) -> InfoPOConfig:
        """Build from verl's whole ``algorithm`` section (what the estimator receives as ``config``)."""
        if algorithm is None:
            return cls()
        return cls.from_mapping(
            algorithm.get("infopo", None),
            norm_adv_by_std_in_grpo=algorithm.get("norm_adv_by_std_in_grpo", True),
        )


def refuse_kl_in_reward(algorithm: Mapping[str, Any] | None) -> None:
    """``algorithm.use_kl_in_reward`` rewrites token_level_rewards and breaks the r_t layout (SPEC section 2)."""
    if algorithm is not None and algorithm.get("use_kl_in_reward", False):
        raise ConfigError(
            "algorithm.use_kl_in_reward=true cannot be combined with algorithm.adv_estimator=infopo: the in-reward "
            "KL penalty is added to every token of token_level_rewards, so the information gain r_t at each turn "
            "end and the outcome R can no longer be told apart. Set algorithm.use_kl_in_reward=false "
            "(use actor_rollout_ref.actor.use_kl_loss=true for a KL term instead)."
        )
