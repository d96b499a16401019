"""The ``infopo_user`` agent loop: a dialogue between the policy and a simulated user, with information gain.

An explicit state machine, one method per state, in the manner of verl's ``ToolAgentLoop``::

    PENDING -> GENERATING -> ACTING -> FEEDBACK -> GENERATING -> ... -> SCORING -> TERMINATED

- PENDING renders the prompt: the row's messages plus any the environment opens the dialogue with
  (``Environment.opening``: tau2-bench's customer speaks first), with the row's tools (a list, or JSON text).
- GENERATING samples agent turn a_t through ``server_manager.generate`` (at most ``max_tokens_per_turn`` tokens
  and never past the response budget) and appends its ids as generated (response_mask 1).
- ACTING parses the action and steps the environment (which may ask the user simulator).
- FEEDBACK appends the environment's answer o_t as a non-assistant message (response_mask 0; or as the messages the
  environment returns with their own roles, e.g. several tool results) and, alongside, renders the placeholder
  message on the same context: the counterfactual prefix of turn t.
- Scoring is pipelined: turn t's counterfactual request goes out as soon as a_{t+1} is generated, alongside the
  environment step that answers a_{t+1} (:mod:`infopo_verl.rollout.scoring`).
- SCORING reads every turn's span and its feedback's span off the final ``response_mask``
  (:func:`infopo_verl.core.turns.row_spans`, the estimator's own definition of a turn) and waits for r_t of every
  turn that received feedback and was followed by a generated turn. Spans come from the mask, not from token
  counts, because verl's continuous-token builders edit the boundary (GLM's drops the agent's stop token when
  feedback follows): a request sent early for tokens the batch no longer holds is resent with the final ones.

The dialogue ends when the environment says done, at the turn limit
(``actor_rollout_ref.rollout.multi_turn.max_assistant_turns``), when the response budget
(``rollout.response_length``) is spent (possibly in the middle of a turn), when the user simulator fails after
its retries, or when a generation comes back aborted or empty (``stop_reason``). Failures are recorded, never
invented: the dialogue scores 0 and, unless ``algorithm.infopo.train_on_failures``, its ``response_mask`` is all
zero, so it carries no loss. Token ids are only ever concatenated with verl's ``ct_*`` helpers: the training
batch holds exactly the ids the policy conditioned on.

What is scored: nothing in validation unless ``algorithm.infopo.scoring.validation`` (the flag comes from
InfoPO's agent-loop workers, :data:`~infopo_verl.rollout.output.VALIDATING`), nothing in a failed dialogue that
will not be trained, and no turn whose feedback is the environment's own error message when
``algorithm.infopo.scoring.env_errors=false``.

Ownership: this loop measures (spans, r_t, the environment's outcome score) and records it as a
:class:`~infopo_verl.rollout.record.RolloutRecord` in ``extra_fields["infopo"]``; the reward manager
(:mod:`infopo_verl.reward_manager`) turns the record into the outcome reward and its logged breakdown;
:class:`InfoPOAgentLoopOutput` lays r_t out in ``rm_scores``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput
from verl.utils.profiler import simple_timer

from infopo_verl.config import InfoPOConfig
from infopo_verl.core.turns import row_spans
from infopo_verl.envs.base import Action, Environment, StepResult
from infopo_verl.envs.registry import environment_class, task_fields
from infopo_verl.rollout.actions import parse_action
from infopo_verl.rollout.output import VALIDATING, InfoPOAgentLoopOutput, turn_reward_entries
from infopo_verl.rollout.record import RECORD_KEY, RolloutRecord
from infopo_verl.rollout.scoring import DialogueScorer, ScoringTurn, resolve_factual_source
from infopo_verl.users.base import SimulatorFailure
from infopo_verl.users.factory import build_user_simulator

logger = logging.getLogger(__name__)

AGENT_LOOP_NAME = "infopo_user"

ABORTED_STOP_REASONS = ("aborted", "abort")
"""``TokenOutput.stop_reason`` values of an aborted request. Source: verl 0.9.1's vLLM server and client."""

MANAGER_KEY = "actor_rollout_ref.rollout.agent.agent_loop_manager_class"
MANAGERS = {
    "trainer.use_v1=true (default)": "infopo_verl.rollout.v1.InfoPOAgentLoopManagerTQ",
    "trainer.use_v1=false": "infopo_verl.rollout.output.InfoPOAgentLoopManager",
}


class State(enum.Enum):
    PENDING = "pending"
    GENERATING = "generating"
    ACTING = "acting"
    FEEDBACK = "feedback"
    SCORING = "scoring"
    TERMINATED = "terminated"


@dataclasses.dataclass
class AgentTurn:
    """One agent turn and what followed it. Spans are inclusive response positions, set from the final mask."""

    first: int
    """Response position of the turn's first generated token (a builder only ever trims a turn's end)."""
    ids: list[int]
    """The tokens as generated (the response may hold fewer: see ``span``)."""
    text: str
    logprobs: list[float] | None
    action: Action | None = None
    feedback: str | None = None
    env_error: bool = False
    """The feedback is the environment's own error message (``StepResult.env_error``)."""
    counterfactual_prefix: list[int] | None = None
    step_reward: float = 0.0
    info_gain: float | None = None
    span: tuple[int, int] | None = None
    """The turn's run of 1 in the final response_mask; None when the builder left none of its tokens."""
    feedback_span: tuple[int, int] | None = None


@dataclasses.dataclass
class Dialogue:
    """All mutable state of one rollout."""

    request_id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    environment: Environment
    ids: list[int] = dataclasses.field(default_factory=list)
    """Prompt and response ids so far, exactly as the policy saw them."""
    prompt_length: int = 0
    response_mask: list[int] = dataclasses.field(default_factory=list)
    response_logprobs: list[float] = dataclasses.field(default_factory=list)
    turns: list[AgentTurn] = dataclasses.field(default_factory=list)
    step: StepResult | None = None
    env_steps: int = 0
    ended_by: str = ""
    simulator_failure: str | None = None
    aborted: bool = False
    validate: bool = False
    scoring: bool = False
    """Information gain is measured in this dialogue (on, not a validation rollout unless asked)."""
    eligible_turns: int = 0
    env_error_turns: int = 0
    scoring_skipped: int = 0
    scoring_tokens: int = 0
    scoring_requests: int = 0
    scorer: DialogueScorer | None = None
    """Sends each turn's scoring requests as soon as a_{t+1} exists; None without information gain."""
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """Ended on a user-simulator failure or an aborted generation: no outcome to learn from."""
        return self.aborted or self.simulator_failure is not None


class InfoPOUserAgentLoop(AgentLoopBase):
    """Multi-turn user-simulation rollout with counterfactual information gain (SPEC sections 1-2)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.pop("tools", None)  # verl's tool registry is not used: actions go to the task environment
        super().__init__(*args, **kwargs)
        self.infopo = InfoPOConfig.from_algorithm(self.config.algorithm)
        self.estimator = str(self.config.algorithm.adv_estimator)
        multi_turn = self.rollout_config.multi_turn
        self.max_turns = multi_turn.max_assistant_turns or None
        self.response_length = int(self.rollout_config.response_length)
        max_model_len = self.rollout_config.get("max_model_len", None)
        self.max_model_len = int(max_model_len or self.rollout_config.prompt_length + self.response_length)
        self.logprobs_mode = self.rollout_config.get("logprobs_mode", None)
        self.calculate_log_probs = bool(self.rollout_config.get("calculate_log_probs", False))
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.engine = str(self.rollout_config.get("name", "vllm"))
        self.full_determinism = bool(self.rollout_config.get("full_determinism", False))

    # ------------------------------------------------------------------ run
    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        dialogue = await self._new_dialogue(kwargs)
        dialogue.validate = self._validating()
        dialogue.scoring = self.infopo.info_gain and (not dialogue.validate or self.infopo.scoring.validation)
        sampling = dict(sampling_params)
        source = resolve_factual_source(self.infopo.scoring.factual, sampling, self.logprobs_mode)
        # The rollout's log-probs are needed when they serve as the factual term, even if verl does not keep them.
        sampling["logprobs"] = self.calculate_log_probs or (dialogue.scoring and source == "rollout")
        dialogue.scorer = self._new_scorer(dialogue, source) if dialogue.scoring else None

        state = State.PENDING
        while state != State.TERMINATED:
            if state == State.PENDING:
                state = await self._handle_pending(dialogue)
            elif state == State.GENERATING:
                state = await self._handle_generating(dialogue, sampling)
            elif state == State.ACTING:
                state = await self._handle_acting(dialogue)
            elif state == State.FEEDBACK:
                state = await self._handle_feedback(dialogue)
            elif state == State.SCORING:
                state = await self._handle_scoring(dialogue)
        return await self._output(dialogue)

    def _validating(self) -> bool:
        """verl's validate flag, as InfoPO's agent-loop worker set it; refuse to guess when no such worker ran us."""
        validate = VALIDATING.get()
        if validate is not None:
            return validate
        if self.infopo.info_gain and not self.infopo.scoring.validation:
            choices = "; ".join(f"{trainer}: {fqn}" for trainer, fqn in MANAGERS.items())
            raise RuntimeError(
                f"the {AGENT_LOOP_NAME} agent loop was not told whether this rollout is validation, so it cannot "
                f"keep validation outcome-only: set {MANAGER_KEY} to InfoPO's manager ({choices}; "
                "infopo_trainer.yaml sets the v1 one), or set algorithm.infopo.scoring.validation=true to score "
                "validation rollouts as well"
            )
        return False

    async def _new_dialogue(self, kwargs: dict[str, Any]) -> Dialogue:
        task = task_fields(kwargs.get("extra_info"))
        user = build_user_simulator(self.infopo.user, server_manager=self.server_manager, tokenizer=self.tokenizer)
        environment = environment_class(task["env"]).from_row(kwargs, user, self.infopo.env)
        tools = task.get("tools")
        if isinstance(tools, str):  # JSON text: rows whose tool schemas differ (tau2 domains) share one parquet schema
            tools = json.loads(tools)
        return Dialogue(
            request_id=uuid4().hex,
            messages=[dict(message) for message in kwargs["raw_prompt"]],
            tools=list(tools) if tools else None,
            environment=environment,
        )

    # --------------------------------------------------------------- states
    async def _handle_pending(self, dialogue: Dialogue) -> State:
        # Tasks where the user speaks first (tau2-bench's customer) open the dialogue here: part of the prompt.
        try:
            opening = await dialogue.environment.opening()
        except SimulatorFailure as failure:
            opening = []
            dialogue.simulator_failure = failure.reason
            dialogue.ended_by = "simulator_failure"
            logger.warning("user simulator failed before the first turn, dialogue ended: %s", failure.reason)
        dialogue.messages.extend(dict(message) for message in opening)
        dialogue.ids = await self.ct_build_initial_tokens(dialogue.messages, tools=dialogue.tools)
        dialogue.prompt_length = len(dialogue.ids)
        return State.SCORING if dialogue.simulator_failure is not None else State.GENERATING

    async def _handle_generating(self, dialogue: Dialogue, sampling: dict[str, Any]) -> State:
        budget = self.response_length - len(dialogue.response_mask)
        if budget <= 0:
            dialogue.ended_by = "token_budget"
            return State.SCORING
        params = {**sampling, "max_tokens": min(self.infopo.max_tokens_per_turn, budget)}
        with simple_timer("generate_sequences", dialogue.metrics):
            output = await self.server_manager.generate(
                request_id=dialogue.request_id, prompt_ids=dialogue.ids, sampling_params=params
            )
        generated = list(output.token_ids)[: params["max_tokens"]]
        if output.stop_reason in ABORTED_STOP_REASONS or not generated:
            # The engine gave up on the request (weight sync, preemption): the turn is not the policy's answer.
            dialogue.aborted = True
            dialogue.ended_by = "aborted"
            logger.warning("generation aborted (stop_reason=%r, %d tokens), dialogue ended", output.stop_reason,
                           len(generated))
            return State.SCORING
        logprobs = list(output.log_probs)[: len(generated)] if output.log_probs else None

        merge, mask, all_logprobs = await self.ct_merge_assistant_token(
            dialogue.ids,
            generated,
            dialogue.response_mask,
            dialogue.response_logprobs if logprobs is not None else None,
            assistant_logprobs=logprobs,
        )
        dialogue.ids, dialogue.response_mask = merge.token_ids, mask
        if all_logprobs is not None:
            dialogue.response_logprobs = all_logprobs
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        dialogue.turns.append(AgentTurn(len(mask) - merge.appended_token_count, generated, text, logprobs))
        self._submit_scoring(dialogue)

        if len(mask) >= self.response_length:
            # The budget is spent (usually in the middle of this turn): no room for feedback or another turn.
            dialogue.ended_by = "token_budget"
            return State.SCORING
        return State.ACTING

    async def _handle_acting(self, dialogue: Dialogue) -> State:
        turn = dialogue.turns[-1]
        turn.action = parse_action(turn.text)
        dialogue.messages.append({"role": "assistant", "content": turn.text})
        try:
            with simple_timer("tool_calls", dialogue.metrics):
                dialogue.env_steps += 1
                dialogue.step = await dialogue.environment.step(turn.action)
        except SimulatorFailure as failure:
            dialogue.simulator_failure = failure.reason
            dialogue.ended_by = "simulator_failure"
            logger.warning("user simulator failed, dialogue ended: %s", failure.reason)
            return State.SCORING
        turn.step_reward = float(dialogue.step.reward)
        turn.env_error = bool(dialogue.step.env_error)
        if dialogue.step.done:
            dialogue.ended_by = "done"
            return State.SCORING
        if self.max_turns is not None and len(dialogue.turns) >= self.max_turns:
            dialogue.ended_by = "max_turns"
            return State.SCORING
        return State.FEEDBACK

    async def _handle_feedback(self, dialogue: Dialogue) -> State:
        turn = dialogue.turns[-1]
        feedback = dialogue.step.feedback
        if dialogue.step.messages:  # the environment chose the roles (e.g. one tool message per tool result)
            new_messages = [dict(message) for message in dialogue.step.messages]
        else:
            # Feedback to a tool call answers the call (role tool), as in UserRL; plain text is the user talking.
            role = "tool" if turn.action is not None and turn.action.choice is not None else "user"
            new_messages = [{"role": role, "content": feedback}]
        role = new_messages[0]["role"]
        updated = dialogue.messages + new_messages
        merge, mask, all_logprobs = await self.ct_merge_context_msg(
            dialogue.messages,
            updated,
            dialogue.ids,
            dialogue.response_mask,
            dialogue.response_logprobs if dialogue.response_logprobs else None,
            tools=dialogue.tools,
        )
        if len(mask) >= self.response_length:
            dialogue.ended_by = "token_budget"  # no room for the feedback, let alone another turn
            return State.SCORING
        if dialogue.scoring and feedback.strip() and (self.infopo.scoring.env_errors or not turn.env_error):
            # Several messages of one turn (its tool results) are o_t together: one placeholder message replaces them.
            placeholder = dialogue.messages + [{"role": role, "content": self.infopo.placeholder}]
            counterfactual = await self.loop.run_in_executor(
                None,
                lambda: self.continuous_token_builder.merge_context_tokens(
                    dialogue.messages, placeholder, dialogue.ids, tools=dialogue.tools
                ),
            )
            turn.counterfactual_prefix = counterfactual.token_ids
        turn.feedback = feedback
        dialogue.ids, dialogue.response_mask, dialogue.messages = merge.token_ids, mask, updated
        if all_logprobs is not None:
            dialogue.response_logprobs = all_logprobs
        return State.GENERATING

    async def _handle_scoring(self, dialogue: Dialogue) -> State:
        self._settle_spans(dialogue)
        offset = dialogue.prompt_length
        pending = []
        for index, (turn, following) in enumerate(zip(dialogue.turns, dialogue.turns[1:])):
            if not (turn.feedback and turn.feedback.strip() and turn.span and following.span):
                continue
            dialogue.eligible_turns += 1
            if turn.env_error and not self.infopo.scoring.env_errors:
                dialogue.env_error_turns += 1
            elif turn.counterfactual_prefix is not None:
                start, end = following.span
                length = end - start + 1  # the tokens of a_(t+1) the batch holds (a builder may have trimmed it)
                pending.append(
                    ScoringTurn(
                        turn=index,
                        counterfactual_prefix=turn.counterfactual_prefix,
                        next_turn_start=offset + start,
                        next_turn_ids=dialogue.ids[offset + start : offset + end + 1],
                        rollout_logprobs=following.logprobs[:length] if following.logprobs is not None else None,
                    )
                )
        if dialogue.scorer is None:
            return State.TERMINATED
        if not (self._trained(dialogue) and pending):
            dialogue.scorer.cancel()  # a failed dialogue learns nothing from r_t: drop what went out early
            return State.TERMINATED
        with simple_timer("infopo_scoring", dialogue.metrics):
            result = await dialogue.scorer.finish(dialogue.ids, pending)
        for index, value in result.info_gain.items():
            dialogue.turns[index].info_gain = value
        dialogue.scoring_skipped = result.skipped
        dialogue.scoring_tokens = result.tokens_submitted
        dialogue.scoring_requests = result.requests
        return State.TERMINATED

    def _trained(self, dialogue: Dialogue) -> bool:
        """The dialogue carries loss: not failed, or ``algorithm.infopo.train_on_failures``."""
        return self.infopo.train_on_failures or not dialogue.failed

    @staticmethod
    def _settle_spans(dialogue: Dialogue) -> None:
        """Give every turn its span and its feedback's span, read off the final response_mask."""
        turn_spans, gap_spans = row_spans(dialogue.response_mask)
        run_of = {start: run for run, (start, _) in enumerate(turn_spans)}
        for turn in dialogue.turns:
            run = run_of.pop(turn.first, None)
            if run is not None:
                turn.span = turn_spans[run]
                turn.feedback_span = gap_spans[run] if turn.feedback is not None else None
        if run_of:  # a run of 1 that no generation produced: the mask and the turns disagree
            raise RuntimeError(
                f"dialogue {dialogue.request_id}: response_mask has agent runs at positions {sorted(run_of)} that no "
                "generated turn starts; the continuous-token builder inserted generated-looking tokens"
            )

    # ------------------------------------------------- pipelined scoring
    def _new_scorer(self, dialogue: Dialogue, source: str) -> DialogueScorer:
        return DialogueScorer(
            self.server_manager, dialogue.request_id, self.max_model_len, source=source, engine=self.engine,
            prefix_cache=self.infopo.scoring.prefix_cache,
            # verl forwards the dialogue's id unchanged under full_determinism: one request in flight per id.
            serial=self.full_determinism,
        )

    def _submit_scoring(self, dialogue: Dialogue) -> None:
        """a_{t+1} was just generated: send turn t's scoring request while the environment answers a_{t+1}."""
        if dialogue.scorer is None or len(dialogue.turns) < 2:
            return
        turn, following = dialogue.turns[-2], dialogue.turns[-1]
        if turn.counterfactual_prefix is None or dialogue.prompt_length + following.first >= len(dialogue.ids):
            return  # not eligible, or the builder left no token of a_{t+1}
        # a_{t+1} as the dialogue holds it now, at the position it keeps (the ct_* helpers only append). A builder
        # may still trim its end when the next feedback arrives (GLM drops the stop token): finish() compares each
        # request with the turns the final mask holds and resends any whose tokens changed.
        start = dialogue.prompt_length + following.first
        next_turn_ids = dialogue.ids[start:]
        dialogue.scorer.submit(
            ScoringTurn(
                turn=len(dialogue.turns) - 2,
                counterfactual_prefix=turn.counterfactual_prefix,
                next_turn_start=start,
                next_turn_ids=next_turn_ids,
                rollout_logprobs=following.logprobs[: len(next_turn_ids)] if following.logprobs is not None else None,
            )
        )

    # --------------------------------------------------------------- output
    async def _output(self, dialogue: Dialogue) -> AgentLoopOutput:
        outcome = None if dialogue.failed else float(await dialogue.environment.final_score())
        trained = self._trained(dialogue)
        # Turns of the mask only: a generation the builder removed entirely is no agent turn (counted).
        turns = [turn for turn in dialogue.turns if turn.span is not None]
        info_gains = [turn.info_gain for turn in turns]
        record = RolloutRecord(
            family=dialogue.environment.family,
            turn_spans=[turn.span for turn in turns],
            feedback_spans=[turn.feedback_span for turn in turns],
            info_gain=info_gains,
            turn_rewards=turn_reward_entries(
                [turn.span[1] for turn in turns], info_gains, self.estimator, self.infopo.beta
            ),
            eligible_turns=dialogue.eligible_turns,
            scoring_skipped=dialogue.scoring_skipped,
            env_error_turns=dialogue.env_error_turns,
            scoring_tokens=dialogue.scoring_tokens,
            scoring_requests=dialogue.scoring_requests,
            scoring_seconds=float(dialogue.metrics.get("infopo_scoring", 0.0)),
            step_rewards=[turn.step_reward for turn in turns],
            env_steps=dialogue.env_steps,
            env_score=outcome,
            task_metrics=dict(dialogue.environment.task_metrics()),
            ended_by=dialogue.ended_by,
            simulator_failure=dialogue.simulator_failure,
            aborted=dialogue.aborted,
            validate=dialogue.validate,
            trained=trained,
            empty_turns=len(dialogue.turns) - len(turns),
            agent_texts=[turn.text for turn in turns],
            feedback_texts=[turn.feedback for turn in turns],
        )
        response_ids = dialogue.ids[dialogue.prompt_length :]
        response_mask = dialogue.response_mask if trained else [0] * len(dialogue.response_mask)
        response_logprobs = dialogue.response_logprobs
        if not response_ids:
            # Aborted before its first token: verl needs one response position (the outcome goes on the last one).
            # A padding token, masked out, conditioned on by nothing.
            response_ids, response_mask, response_logprobs = [self.pad_token_id], [0], [0.0]
        metrics = {key: value for key, value in dialogue.metrics.items() if key in ("generate_sequences", "tool_calls")}
        return InfoPOAgentLoopOutput(
            prompt_ids=dialogue.ids[: dialogue.prompt_length],
            response_ids=response_ids,
            response_mask=response_mask,
            response_logprobs=response_logprobs if self.calculate_log_probs else None,
            # As verl's ToolAgentLoop counts: the prompt, every agent turn and every feedback message.
            num_turns=1 + len(dialogue.turns) + sum(turn.feedback is not None for turn in dialogue.turns),
            metrics=metrics,
            extra_fields={RECORD_KEY: record},
        )
