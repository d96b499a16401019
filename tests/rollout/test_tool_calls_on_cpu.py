"""``parse_tool_calls``: every ``<tool_call>`` block of a turn, for agents with a whole toolbox (tau2-bench)."""

from __future__ import annotations

from infopo_verl.rollout.actions import ToolCall, parse_tool_calls


def test_several_calls_in_order_with_the_text_around_them():
    text = (
        "<think>look it up</think>Let me check.\n"
        '<tool_call>\n{"name": "get_user_details", "arguments": {"user_id": "u1"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_order", "arguments": "{\\"order_id\\": \\"#W1\\"}"}\n</tool_call>'
    )
    calls, problems, rest = parse_tool_calls(text)
    assert calls == [ToolCall("get_user_details", {"user_id": "u1"}), ToolCall("get_order", {"order_id": "#W1"})]
    assert problems == [] and rest == "Let me check."


def test_plain_text_has_no_calls():
    assert parse_tool_calls("Hello, how can I help?") == ([], [], "Hello, how can I help?")


def test_unreadable_blocks_are_reported_one_by_one_and_never_raise():
    text = (
        "<tool_call>{not json}</tool_call>"
        '<tool_call>{"arguments": {}}</tool_call>'
        '<tool_call>{"name": "x", "arguments": [1]}</tool_call>'
        '<tool_call>{"name": "done"}'  # unclosed, at the end of the turn (cut by the token limit): still read
    )
    calls, problems, rest = parse_tool_calls(text)
    assert calls == [ToolCall("done", {})]
    assert [problem.split(" ")[2] for problem in problems] == ["1", "2", "3"]
    assert "not valid JSON" in problems[0] and "no function name" in problems[1] and "not a JSON object" in problems[2]
    assert rest == ""
