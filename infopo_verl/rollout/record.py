"""The rollout record: what the ``infopo_user`` loop measured about one dialogue, as one typed structure.

The loop writes one :class:`RolloutRecord` into ``AgentLoopOutput.extra_fields["infopo"]``; the reward manager,
the ``rm_scores`` layout, the credit view and the metrics read it back through :meth:`RolloutRecord.from_extra_fields`
(one row's ``extra_fields``) or :meth:`RolloutRecord.from_batch` (a row of a trainer batch), never by key.

How it travels through verl 0.9.1 (why the accessors accept a plain ``dict`` too):

- legacy trainer: ``AgentLoopWorker._postprocess`` turns every ``extra_fields`` key into an object column, so the
  record itself sits in ``non_tensor_batch["infopo"]``;
- reward loop: ``_compute_score`` sends ``extra_fields`` to the reward actor as ``non_tensor_batch
  ["tool_extra_fields"]`` (Ray pickles it; the plugin is importable there, as everywhere verl runs);
- v1 trainer: ``AgentLoopOutput.as_dict`` calls Pydantic's ``model_dump``, which turns a dataclass inside
  ``extra_fields`` into a ``dict``. :class:`~infopo_verl.rollout.output.InfoPOAgentLoopOutput` puts the record
  back, but anything reading a dump (or a record from an older run) gets a mapping, rebuilt here field by field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

RECORD_KEY = "infopo"
"""``extra_fields`` key of the rollout's record (becomes a ``non_tensor_batch`` column on the legacy trainer)."""

Span = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class RolloutRecord:
    """One dialogue, as the rollout measured it. Positions are response indices (0 = first response token).

    Per-turn lists have one entry per agent turn, in order; agent turns are the runs of 1 of the dialogue's
    ``response_mask`` (SPEC section 2), read off the final mask by :func:`infopo_verl.core.turns.row_spans`.
    """

    family: str
    """Task family of the environment (``clarify``, ``travel``, ...)."""
    turn_spans: list[Span]
    """(first, last) position of every agent turn, from the final ``response_mask`` before a failure zeroed it."""
    feedback_spans: list[Span | None]
    """(first, last) position of the feedback after each turn (the zeros up to the next turn, chat-template
    boundary tokens included); None for a turn that received no feedback in the response."""
    info_gain: list[float | None]
    """r_t of each turn; None where it was not measured (final turn, not eligible, skipped, validation)."""
    turn_rewards: list[tuple[int, float]]
    """(position, value) added to ``rm_scores``: raw r_t at the turn's last token for ``infopo``, beta * r_t for
    any other estimator. Empty when nothing was measured (validation, failures)."""
    eligible_turns: int
    """Turns that received non-empty feedback and were followed by another agent turn (scoring candidates)."""
    scoring_skipped: int
    """Eligible turns not scored because a request would exceed ``max_model_len - 1`` tokens."""
    env_error_turns: int
    """Eligible turns left out of scoring because their feedback was the environment's own error message
    (``algorithm.infopo.scoring.env_errors=false``)."""
    scoring_tokens: int
    """Prompt tokens sent to the inference server for scoring."""
    scoring_requests: int
    """Scoring requests sent to the inference server."""
    scoring_seconds: float
    """Wall time this dialogue spent scoring, in seconds (0 when it sent no scoring request)."""
    step_rewards: list[float]
    """The environment's step reward for each turn (0 for a turn the environment never saw)."""
    env_steps: int
    """Actions sent to the environment."""
    env_score: float | None
    """The environment's final score; None when the dialogue failed (simulator failure, aborted generation)."""
    task_metrics: dict[str, float]
    """The task's own metrics of this dialogue (``Environment.task_metrics``: ColBench's ``pass`` and ``succ``);
    empty for families without any."""
    ended_by: str
    """Why the dialogue ended: ``done``, ``max_turns``, ``token_budget``, ``simulator_failure`` or ``aborted``."""
    simulator_failure: str | None
    """The user simulator's failure reason when it failed after its retries, else None."""
    aborted: bool
    """A generation came back aborted (``stop_reason`` aborted) or with no token; the dialogue ended there."""
    validate: bool
    """verl ran this rollout for validation (the ``validate`` flag of ``AgentLoopWorker._run_agent_loop``)."""
    trained: bool
    """The row carries loss: false when a failure zeroed its ``response_mask`` (see
    ``algorithm.infopo.train_on_failures``)."""
    empty_turns: int
    """Generations the continuous-token builder left no token of in the response (e.g. GLM's builder drops a
    stop token that was the whole turn): not agent turns of the mask, so absent from the per-turn lists."""
    agent_texts: list[str]
    """What the agent said at each turn (decoded, special tokens removed)."""
    feedback_texts: list[str | None]
    """The environment's / user's answer to each turn; None where there was none."""

    @property
    def failed(self) -> bool:
        """The dialogue ended on a simulator failure or an aborted generation."""
        return self.simulator_failure is not None or self.aborted

    @property
    def measured_gains(self) -> list[float]:
        """Every measured r_t of the dialogue, in turn order."""
        return [gain for gain in self.info_gain if gain is not None]

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RolloutRecord:
        """Rebuild a record that crossed a serialiser as a mapping (Pydantic's ``model_dump``, JSON)."""
        names = {field.name for field in dataclasses.fields(cls)}
        missing = sorted(names - set(values))
        if missing:
            raise ValueError(
                f"extra_fields[{RECORD_KEY!r}] lacks the rollout-record field(s) {', '.join(missing)}: it was not "
                "written by this version of the infopo_user agent loop"
            )
        fields = {name: values[name] for name in names}
        fields["turn_spans"] = [tuple(span) for span in fields["turn_spans"]]
        fields["feedback_spans"] = [tuple(span) if span is not None else None for span in fields["feedback_spans"]]
        fields["turn_rewards"] = [(int(position), float(value)) for position, value in fields["turn_rewards"]]
        return cls(**fields)

    @classmethod
    def from_extra_fields(cls, extra_fields: Any) -> RolloutRecord | None:
        """The record in one row's ``extra_fields`` (verl's mapping, or TensorDict's ``NonTensorData`` around it);
        None when the row came from another agent loop."""
        extra_fields = getattr(extra_fields, "data", extra_fields)
        if not isinstance(extra_fields, Mapping):
            return None
        value = extra_fields.get(RECORD_KEY)
        if value is None or isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_mapping(value)
        raise TypeError(f"extra_fields[{RECORD_KEY!r}] is a {type(value).__name__}, not a rollout record")

    @classmethod
    def from_batch(cls, non_tensor_batch: Mapping[str, Any], row: int) -> RolloutRecord | None:
        """The record of ``row`` of a trainer batch: the legacy trainer's ``infopo`` column, else the row's
        ``extra_fields`` (v1) or ``tool_extra_fields`` (reward loop)."""
        if RECORD_KEY in non_tensor_batch:
            return cls.from_extra_fields({RECORD_KEY: non_tensor_batch[RECORD_KEY][row]})
        for column in ("extra_fields", "tool_extra_fields"):
            if column in non_tensor_batch:
                return cls.from_extra_fields(non_tensor_batch[column][row])
        return None
