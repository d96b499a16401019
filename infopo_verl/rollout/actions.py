"""Turn an agent's generated text into an :class:`~infopo_verl.envs.base.Action`.

Two action formats are accepted: plain text (the built-in clarify task) and UserRL's tool call
``interact_with_env(choice, content)`` in the Hermes format Qwen models emit::

    <tool_call>
    {"name": "interact_with_env", "arguments": {"choice": "action", "content": "..."}}
    </tool_call>

Tasks with a whole toolbox (tau2-bench) read every block of a turn with :func:`parse_tool_calls` instead.

The text is untrusted model output: it is parsed as JSON data only, never evaluated. A malformed tool call is not
an error of the rollout: the action carries ``parse_error`` and the environment tells the agent what went wrong.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from infopo_verl.envs.base import Action

TOOL_NAME = "interact_with_env"
_TOOL_CALL = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)


def parse_action(text: str) -> Action:
    """Parse one agent turn; never raises on model output."""
    match = _TOOL_CALL.search(text)
    if match is None:
        return Action(content=_THINK.sub("", text).strip(), raw=text)
    try:
        call = json.loads(match.group(1).strip())
    except json.JSONDecodeError as error:
        return Action(content="", raw=text, parse_error=f"the tool call is not valid JSON ({error.msg})")
    if not isinstance(call, dict) or call.get("name") != TOOL_NAME:
        return Action(content="", raw=text, parse_error=f"the only tool is {TOOL_NAME}")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):  # some models emit the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return Action(content="", raw=text, parse_error="the tool call arguments are not a JSON object")
    if not isinstance(arguments, dict):
        return Action(content="", raw=text, parse_error="the tool call arguments are not a JSON object")
    choice, content = arguments.get("choice"), arguments.get("content")
    if not isinstance(choice, str) or not isinstance(content, (str, int, float)):
        return Action(content="", raw=text, parse_error=f"{TOOL_NAME} needs a string `choice` and a `content`")
    return Action(content=str(content).strip(), choice=choice.strip().lower(), raw=text)


# ---------------------------------------------------------------------------------------------------------------
# Tool calls of any name, for tasks whose agent has a whole toolbox (tau2-bench's domain tools). Same Hermes format
# as above; a turn may hold several calls. Kept apart from parse_action so UserRL's single-tool rules stay as they
# are.


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """One ``<tool_call>`` block of an agent turn: the function's name and its JSON arguments."""

    name: str
    arguments: dict[str, Any]


def parse_tool_calls(text: str) -> tuple[list[ToolCall], list[str], str]:
    """Every ``<tool_call>`` JSON block of ``text``, in order; never raises on model output.

    Returns ``(calls, problems, rest)``: the blocks that parsed, one short reason per block that did not (the agent
    is told), and the text outside the blocks with any ``<think>`` section removed.
    """
    calls: list[ToolCall] = []
    problems: list[str] = []
    for number, match in enumerate(_TOOL_CALL.finditer(text), start=1):
        try:
            call = json.loads(match.group(1).strip())
        except json.JSONDecodeError as error:
            problems.append(f"tool call {number} is not valid JSON ({error.msg})")
            continue
        name = call.get("name") if isinstance(call, dict) else None
        if not isinstance(name, str) or not name.strip():
            problems.append(f"tool call {number} has no function name")
            continue
        arguments = call.get("arguments", {})
        if isinstance(arguments, str):  # some models emit the arguments as a JSON string
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError:
                arguments = None
        if not isinstance(arguments, dict):
            problems.append(f"tool call {number} ({name.strip()[:60]}): the arguments are not a JSON object")
            continue
        calls.append(ToolCall(name=name.strip(), arguments=arguments))
    rest = _THINK.sub("", _TOOL_CALL.sub("", text)).strip()
    return calls, problems, rest
