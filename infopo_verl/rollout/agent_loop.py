"""The ``infopo_user`` agent loop: a dialogue between the policy and a simulated user, with information gain.

An explicit state machine, one method per state, in the manner of verl's ``ToolAgentLoop``::

    PENDING -> GENERATING -> ACTING -> FEEDBACK -> GENERATING -> ... -> SCORING -> TERMINATED

- GENERATING samples agent turn a_t through ``server_manager.generate`` (at most ``max_tokens_per_turn`` tokens
  and never past the response budget) and appends its ids as generated (response_mask 1).
- ACTING parses the action and steps the environment (which may ask the user simulator).
- FEEDBACK appends the environment's answer o_t as a non-assistant message (response_mask 0) and, alongside,
  renders the placeholder message on the same context: the counterfactual prefix of turn t.
- SCORING waits for r_t of every turn that received feedback and was followed by a generated turn
  (:mod:`infopo_verl.rollout.scoring`): each turn's requests went out as soon as a_{t+1} was generated, alongside
  the environment step that answers a_{t+1}.

The dialogue ends when the environment says done, at the turn limit
(``actor_rollout_ref.rollout.multi_turn.max_assistant_turns``), when the response budget
(``rollout.response_length``) is spent (possibly in the middle of a turn), or when the user simulator fails
after its retries (recorded, never invented). Token ids are only ever concatenated with verl's ``ct_*`` helpers:
the training batch holds exactly the ids the policy conditioned on.

Ownership: this loop measures (spans, r_t, the environment's outcome score) and records it in
``extra_fields["infopo"]``; the reward manager (:mod:`infopo_verl.reward_manager`) turns the record into the
outcome reward and its logged breakdown; :class:`InfoPOAgentLoopOutput` lays r_t out in ``rm_scores``.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput
from verl.utils.profiler import simple_timer

from infopo_verl.config import InfoPOConfig
from infopo_verl.envs.base import Action, Environment, StepResult
from infopo_verl.envs.registry import environment_class, task_fields
from infopo_verl.rollout.actions import parse_action
from infopo_verl.rollout.output import RECORD_KEY, InfoPOAgentLoopOutput, turn_reward_entries
from infopo_verl.rollout.scoring import DialogueScorer, ScoringTurn, resolve_factual_source
from infopo_verl.users.base import SimulatorFailure
from infopo_verl.users.factory import build_user_simulator

logger = logging.getLogger(__name__)

AGENT_LOOP_NAME = "infopo_user"


class State(enum.Enum):
    PENDING = "pending"
    GENERATING = "generating"
    ACTING = "acting"
    FEEDBACK = "feedback"
    SCORING = "scoring"
    TERMINATED = "terminated"


@dataclasses.dataclass
class AgentTurn:
    """One agent turn and what followed it. Spans are inclusive response positions."""

    span: tuple[int, int]
    ids: list[int]
    text: str
    logprobs: list[float] | None
    action: Action | None = None
    feedback: str | None = None
    feedback_span: tuple[int, int] | None = None
    counterfactual_prefix: list[int] | None = None
    step_reward: float = 0.0
    info_gain: float | None = None


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
    scoring_skipped: int = 0
    scoring_tokens: int = 0
    scoring_requests: int = 0
    scorer: DialogueScorer | None = None
    """Sends each turn's scoring requests as soon as a_{t+1} exists; None without information gain."""
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)


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
        self.engine = str(self.rollout_config.get("name", "vllm"))
        self.full_determinism = bool(self.rollout_config.get("full_determinism", False))

    # ------------------------------------------------------------------ run
    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput:
        dialogue = await self._new_dialogue(kwargs)
        sampling = dict(sampling_params)
        source = resolve_factual_source(self.infopo.scoring.factual, sampling, self.logprobs_mode)
        # The rollout's log-probs are needed when they serve as the factual term, even if verl does not keep them.
        sampling["logprobs"] = self.calculate_log_probs or (self.infopo.info_gain and source == "rollout")
        dialogue.scorer = self._new_scorer(dialogue, source)

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
                state = await self._handle_scoring(dialogue, source)
        return await self._output(dialogue)

    async def _new_dialogue(self, kwargs: dict[str, Any]) -> Dialogue:
        task = task_fields(kwargs.get("extra_info"))
        user = build_user_simulator(self.infopo.user, server_manager=self.server_manager, tokenizer=self.tokenizer)
        environment = environment_class(task["env"]).from_row(kwargs, user, self.infopo.env)
        return Dialogue(
            request_id=uuid4().hex,
            messages=[dict(message) for message in kwargs["raw_prompt"]],
            tools=list(task["tools"]) if task.get("tools") else None,
            environment=environment,
        )

    # --------------------------------------------------------------- states
    async def _handle_pending(self, dialogue: Dialogue) -> State:
        dialogue.ids = await self.ct_build_initial_tokens(dialogue.messages, tools=dialogue.tools)
        dialogue.prompt_length = len(dialogue.ids)
        return State.GENERATING

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
        end = len(mask) - 1
        text = self.tokenizer.decode(generated, skip_special_tokens=True)
        dialogue.turns.append(AgentTurn((end - len(generated) + 1, end), generated, text, logprobs))
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
        if dialogue.step.done:
            dialogue.ended_by = "done"
            return State.SCORING
        if self.max_turns is not None and len(dialogue.turns) >= self.max_turns:
            dialogue.ended_by = "max_turns"
            return State.SCORING
        return State.FEEDBACK

    async def _handle_feedback(self, dialogue: Dialogue) -> State:
        turn = dialogue.turns[-1]
        # Feedback to a tool call answers the call (role tool), as in UserRL; plain text is the user talking.
        role = "tool" if turn.action is not None and turn.action.choice is not None else "user"
        feedback = dialogue.step.feedback
        updated = dialogue.messages + [{"role": role, "content": feedback}]
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
        if self.infopo.info_gain and feedback.strip():
            placeholder = dialogue.messages + [{"role": role, "content": self.infopo.placeholder}]
            counterfactual = await self.loop.run_in_executor(
                None,
                lambda: self.continuous_token_builder.merge_context_tokens(
                    dialogue.messages, placeholder, dialogue.ids, tools=dialogue.tools
                ),
            )
            turn.counterfactual_prefix = counterfactual.token_ids
        turn.feedback = feedback
        turn.feedback_span = (len(dialogue.response_mask), len(mask) - 1)
        dialogue.ids, dialogue.response_mask, dialogue.messages = merge.token_ids, mask, updated
        if all_logprobs is not None:
            dialogue.response_logprobs = all_logprobs
        return State.GENERATING

    async def _handle_scoring(self, dialogue: Dialogue, source: str) -> State:
        if dialogue.scorer is None:
            return State.TERMINATED
        with simple_timer("infopo_scoring", dialogue.metrics):
            result = await dialogue.scorer.finish(dialogue.ids)
        for index, value in result.info_gain.items():
            dialogue.turns[index].info_gain = value
        dialogue.scoring_skipped = result.skipped
        dialogue.scoring_tokens = result.tokens_submitted
        dialogue.scoring_requests = result.requests
        return State.TERMINATED

    # ------------------------------------------------- pipelined scoring
    def _new_scorer(self, dialogue: Dialogue, source: str) -> DialogueScorer | None:
        if not self.infopo.info_gain:
            return None
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
        if turn.counterfactual_prefix is None or not following.ids:
            return
        # Every id the request carries is already final: the counterfactual prefix was rendered from ctx_t when
        # o_t arrived, a_{t+1} is exactly what was sampled, and dialogue.ids only ever grows at its end (the ct_*
        # helpers append), so a_{t+1}'s position, counted from the ids rather than from a mask that may still
        # change, is the position it has in the final batch.
        dialogue.scorer.submit(
            ScoringTurn(
                turn=len(dialogue.turns) - 2,
                counterfactual_prefix=turn.counterfactual_prefix,
                next_turn_start=len(dialogue.ids) - len(following.ids),
                next_turn_ids=following.ids,
                rollout_logprobs=following.logprobs,
            )
        )

    # --------------------------------------------------------------- output
    async def _output(self, dialogue: Dialogue) -> AgentLoopOutput:
        outcome = None
        if dialogue.simulator_failure is None:
            outcome = float(await dialogue.environment.final_score())
        info_gains = [turn.info_gain for turn in dialogue.turns]
        record = {
            "family": dialogue.environment.family,
            "turn_spans": [list(turn.span) for turn in dialogue.turns],
            "feedback_spans": [list(turn.feedback_span) if turn.feedback_span else None for turn in dialogue.turns],
            "info_gain": info_gains,
            "turn_rewards": turn_reward_entries(
                [turn.span[1] for turn in dialogue.turns], info_gains, self.estimator, self.infopo.beta
            ),
            "eligible_turns": sum(turn.counterfactual_prefix is not None for turn in dialogue.turns[:-1]),
            "scoring_skipped": dialogue.scoring_skipped,
            "scoring_tokens": dialogue.scoring_tokens,
            "scoring_requests": dialogue.scoring_requests,
            "step_rewards": [turn.step_reward for turn in dialogue.turns],
            "env_steps": dialogue.env_steps,
            "env_score": outcome,
            "ended_by": dialogue.ended_by,
            "simulator_failure": dialogue.simulator_failure,
            "agent_texts": [turn.text for turn in dialogue.turns],
            "feedback_texts": [turn.feedback for turn in dialogue.turns],
        }
        metrics = {key: value for key, value in dialogue.metrics.items() if key in ("generate_sequences", "tool_calls")}
        return InfoPOAgentLoopOutput(
            prompt_ids=dialogue.ids[: dialogue.prompt_length],
            response_ids=dialogue.ids[dialogue.prompt_length :],
            response_mask=dialogue.response_mask,
            response_logprobs=dialogue.response_logprobs if self.calculate_log_probs else None,
            # As verl's ToolAgentLoop counts: the prompt, every agent turn and every feedback message.
            num_turns=1 + len(dialogue.turns) + sum(turn.feedback is not None for turn in dialogue.turns),
            metrics=metrics,
            extra_fields={RECORD_KEY: record},
        )
