"""FunctionGym: probe a hidden arithmetic function of four numbers, then predict it on a test case.

Rules and scoring (facts from UserRL's FunctionGym at cf55a30, its README and environment):

- ``action``: four numbers -> ``For numbers [a, b, c, d], the result is r.`` (r rounded to 4 decimals); the test
  case itself is refused; a division by zero is reported as an error. Reward 0.
- ``search``: the content must be ``test`` -> ``Test case: [..]``. Reward 0.
- ``answer``: a number. Correct -> reward 1.0 and the dialogue ends; wrong -> reward 0, the agent may try again.
- Score: sum of step rewards, i.e. 1.0 once the test case is answered right, else 0.

No simulator is involved: the hidden rule (``c * (a * b) * d``, ...) is evaluated by :func:`evaluate_rule`, a small
interpreter over Python's ``ast`` that accepts only the four variables, numbers, + - * / ** and unary minus. The
rule comes from a data file, so it is never passed to ``eval``.

Ours (UserRL's comparison function is not published with the data): an answer is correct when it is within 0.01 of
the expected value, or within a relative 1e-4 for large values, so ``2.33`` answers ``2.3333``.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Mapping, Sequence
from typing import Any

from infopo_verl.envs.userrl.common import Handled, UserRLEnvironment, load_task, require_field
from infopo_verl.users.base import UserSimulator

__all__ = ["FunctionEnv", "evaluate_rule", "answer_matches"]

VARIABLES = ("a", "b", "c", "d")
ABSOLUTE_TOLERANCE = 0.01
"""Ours: an answer within this of the expected value is correct (the prompt asks for a single number)."""
RELATIVE_TOLERANCE = 1e-4
"""Ours: for large expected values, a relative error below this is also correct."""

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def evaluate_rule(rule: str, numbers: Sequence[float]) -> float:
    """Evaluate ``rule`` (over ``a, b, c, d``) at ``numbers``; raises ValueError for anything but plain arithmetic
    and ZeroDivisionError for a division by zero."""
    values = dict(zip(VARIABLES, (float(number) for number in numbers)))
    if len(values) != len(VARIABLES):
        raise ValueError(f"a rule takes {len(VARIABLES)} numbers, got {len(numbers)}")
    try:
        tree = ast.parse(rule, mode="eval")
    except SyntaxError as error:
        raise ValueError(f"rule {rule!r} is not an arithmetic expression ({error.msg})") from None

    def visit(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return visit(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.Name) and node.id in values:
            return values[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = visit(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = visit(node.left), visit(node.right)
            try:  # all operands are floats, so ``**`` overflows instead of building a huge integer
                result = _BINARY[type(node.op)](left, right)
            except OverflowError:
                raise ValueError("the result is too large") from None
            if isinstance(result, complex) or not math.isfinite(result):
                raise ValueError("the result is not a finite real number")
            return float(result)
        raise ValueError(f"rule {rule!r} uses {type(node).__name__}, which is not plain arithmetic on a, b, c, d")

    return visit(tree)


def answer_matches(answer: float, expected: float) -> bool:
    return math.isclose(answer, expected, rel_tol=RELATIVE_TOLERANCE, abs_tol=ABSOLUTE_TOLERANCE)


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class FunctionEnv(UserRLEnvironment):
    """One FunctionGym task; deterministic, the user simulator is not consulted."""

    family = "function"
    choices = ("action", "search", "answer")

    def __init__(self, rule: str, test_case: Sequence[float], expected: float, options: Mapping[str, Any] | None = None):
        super().__init__(options)
        self.rule = rule
        self.test_case = [float(number) for number in test_case]
        self.expected = float(expected)
        self.solved = False

    @classmethod
    def from_row(cls, row: Mapping[str, Any], user: UserSimulator | None, options: Mapping[str, Any]) -> FunctionEnv:
        task = load_task(row, cls.family)
        rule = require_field(task, "rule", str, cls.family)
        test_case = require_field(task, "test_case", list, cls.family)
        if len(test_case) != len(VARIABLES) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                       for x in test_case):
            raise ValueError(f"extra_info.infopo.task.test_case must be four numbers, got {test_case!r}")
        expected = require_field(task, "expected_result", (int, float), cls.family)
        try:
            evaluate_rule(rule, test_case)
        except (ValueError, ZeroDivisionError) as error:
            raise ValueError(f"extra_info.infopo.task.rule cannot be evaluated on the test case: {error}") from None
        return cls(rule, test_case, expected, options)

    async def handle(self, choice: str, content: str) -> Handled:
        if choice == "search":
            if content.strip().lower() != "test":
                return "The search content must be exactly 'test' to get the test case.", 0.0, False, {}
            shown = ", ".join(_format_number(x) for x in self.test_case)
            return f"Test case: [{shown}]", 0.0, False, {"revealed_test_case": True}
        if choice == "action":
            return self._probe(content)
        return self._answer(content)

    def _probe(self, content: str) -> Handled:
        numbers = [float(match) for match in _NUMBER.findall(content)]
        if len(numbers) != len(VARIABLES):
            return f"Please give exactly four numbers (got {len(numbers)}).", 0.0, False, {"probe_error": "count"}
        if numbers == self.test_case:
            return "That is the test case: its result is not revealed.", 0.0, False, {"probe_error": "test case"}
        try:
            result = round(evaluate_rule(self.rule, numbers), 4)
        except (ZeroDivisionError, ValueError):
            return ("These numbers cannot be evaluated (e.g. a division by zero); try other numbers.", 0.0, False,
                    {"probe_error": "evaluation"})
        shown = ", ".join(_format_number(x) for x in numbers)
        return f"For numbers [{shown}], the result is {_format_number(result)}.", 0.0, False, {"probe": numbers}

    def _answer(self, content: str) -> Handled:
        match = _NUMBER.fullmatch(content.strip().rstrip("."))
        if match is None:
            return "The answer must be a single number.", 0.0, False, {"answer_error": "not a number"}
        answer = float(match.group(0))
        if answer_matches(answer, self.expected):
            self.solved = True
            return "Your answer is correct!", 1.0, True, {"answer": answer, "correct": True}
        return ("Your answer is wrong. Keep probing the hidden function and answer again later.", 0.0, False,
                {"answer": answer, "correct": False})
