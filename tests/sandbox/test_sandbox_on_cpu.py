"""The sandbox on its own: values cross as plain data with their types, failures are named, limits hold.

Real processes, real namespaces (the tests run as root on Linux, as CI does); nothing is faked.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import fractions
import json
import math
from collections import Counter, OrderedDict

import pytest

from infopo_verl.sandbox import Sandbox, SandboxConfig, SandboxUnavailable, child, values
from infopo_verl.sandbox.sandbox import namespaces_available

pytestmark = pytest.mark.skipif(not namespaces_available()[0], reason="needs Linux namespaces (root)")


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(SandboxConfig(concurrency=2))
    yield box
    box.close()


def run(sandbox, code, calls):
    return asyncio.run(sandbox.run(code, calls))


def test_values_keep_their_types(sandbox):
    code = (
        "import datetime, decimal, fractions, collections\n"
        "Point = collections.namedtuple('Point', 'x y')\n"
        "def helper(x):\n    return x + 1\n"
        "def solution(kind):\n"
        "    return {\n"
        "        'tuple': (1, helper(1)), 'list': [1, 2], 'int_keys': {1: 'a', 2: 'b'}, 'set': {1, 2},\n"
        "        'frozen': frozenset('ab'), 'big': 3 ** 5000, 'float': 0.1 + 0.2, 'nan': float('nan'),\n"
        "        'neg_zero': -0.0, 'complex': 1 + 2j, 'bytes': b'\\x00\\xff', 'none': None, 'bool': True,\n"
        "        'decimal': decimal.Decimal('1.10'), 'fraction': fractions.Fraction(1, 3),\n"
        "        'date': datetime.date(2024, 2, 29), 'delta': datetime.timedelta(days=1, seconds=5),\n"
        "        'point': Point(1, 2), 'counter': collections.Counter('aab'),\n"
        "        'ordered': collections.OrderedDict([(2, 'b'), (1, 'a')]),\n"
        "    }[kind]\n"
    )
    expected = {
        "tuple": (1, 2), "list": [1, 2], "int_keys": {1: "a", 2: "b"}, "set": {1, 2}, "frozen": frozenset("ab"),
        "big": 3**5000, "float": 0.1 + 0.2, "neg_zero": -0.0, "complex": 1 + 2j, "bytes": b"\x00\xff",
        "none": None, "bool": True, "decimal": decimal.Decimal("1.10"), "fraction": fractions.Fraction(1, 3),
        "date": datetime.date(2024, 2, 29), "delta": datetime.timedelta(days=1, seconds=5),
        "point": (1, 2), "counter": Counter("aab"), "ordered": OrderedDict([(2, "b"), (1, "a")]),
    }
    kinds = [*expected, "nan"]
    results = run(sandbox, code, [f"solution({kind!r})" for kind in kinds])
    assert all(result.ok for result in results), results
    got = dict(zip(kinds, (result.value for result in results)))
    for kind, value in expected.items():
        assert got[kind] == value, kind
    assert type(got["tuple"]) is tuple and type(got["list"]) is list and got["tuple"] != [1, 2]
    assert list(got["int_keys"]) == [1, 2] and all(type(key) is int for key in got["int_keys"])
    assert type(got["point"]) is tuple and type(got["counter"]) is dict and type(got["ordered"]) is dict
    assert math.copysign(1, got["neg_zero"]) == -1 and math.isnan(got["nan"])
    assert type(got["bool"]) is bool and type(got["decimal"]) is decimal.Decimal


def test_errors_are_named_per_call_and_a_broken_module_fails_every_call(sandbox):
    results = run(sandbox, "def f(x):\n    return 1 / x\n", ["f(1)", "f(0)", "g(1)", "f"])
    assert [result.status for result in results] == ["ok", "error", "error", "unsupported"]
    assert "ZeroDivisionError" in results[1].detail and "NameError" in results[2].detail
    broken = run(sandbox, "def f(:\n", ["f()", "f()"])
    assert [result.status for result in broken] == ["load_error", "load_error"]
    assert "SyntaxError" in broken[0].detail


def test_an_object_with_its_own_eq_is_not_plain_data(sandbox):
    code = "class Equal:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
    (result,) = run(sandbox, code, ["Equal()"])
    assert result.status == "unsupported" and result.value is None


def test_the_decoder_refuses_what_the_encoder_never_writes():
    assert values.MAX_DEPTH == child.MAX_DEPTH
    for node in (["x"], ["i", "12z"], ["l", "notalist"], ["d", [[["l", []], ["n"]]]],
                 ["b", 1], {"kind": "ok"}, ["datetime", "2024-01-01T00:00:00+01:00"]):
        with pytest.raises(ValueError):
            values.decode(node)
    deep: list = ["n"]
    for _ in range(values.MAX_DEPTH + 3):
        deep = ["l", [deep]]
    with pytest.raises(ValueError, match="deeper"):
        values.decode(deep)
    # Integers hash predictably: many colliding keys would make the judge's set building quadratic.
    colliding = ["S", [["i", format(k * (2**61 - 1), "x")] for k in range(values.MAX_HASHED_ITEMS + 1)]]
    with pytest.raises(ValueError, match="more than"):
        values.decode(colliding)
    with pytest.raises(ValueError, match="Fraction"):
        values.decode(["Q", "f" * (values.MAX_FRACTION_DIGITS + 1), "3"])
    # What the encoder writes, the decoder reads back equal (in the judge's process, no sandbox needed).
    sample = {1: (2.5, [None, "s"]), "k": {frozenset({1}), 3}}
    assert values.decode(json.loads(json.dumps(child.encode(sample)))) == sample


def test_an_explicit_none_isolation_warns_once_and_still_runs_code_with_limits(caplog, monkeypatch):
    import infopo_verl.sandbox.sandbox as module

    monkeypatch.setattr(module, "_warned_unisolated", False)
    with caplog.at_level("WARNING", logger=module.__name__):
        box = Sandbox(SandboxConfig(isolation="none", concurrency=1), isolation_setting="my.isolation")
        Sandbox(SandboxConfig(isolation="none", concurrency=2), isolation_setting="my.isolation").close()
    warnings = [record.getMessage() for record in caplog.records if "WITHOUT" in record.getMessage()]
    assert len(warnings) == 1 and "my.isolation=none" in warnings[0] and "NOT enforced" in warnings[0]
    try:
        # 2 GiB: more than the 1 GiB address-space limit, less than the machine would refuse on its own.
        results = asyncio.run(box.run("def f():\n    return [1]\n", ["f()", "len(bytearray(2 << 30))"]))
    finally:
        box.close()
    assert results[0].value == [1]
    assert results[1].status == "error" and "MemoryError" in results[1].detail  # the address-space limit holds


def test_unavailable_namespaces_name_the_setting_that_accepts_the_risk(monkeypatch):
    import infopo_verl.sandbox.sandbox as module

    monkeypatch.setattr(module, "namespaces_available", lambda: (False, "unshare: Operation not permitted"))
    with pytest.raises(SandboxUnavailable, match=r"set algorithm\.x\.isolation=none"):
        Sandbox(SandboxConfig(), isolation_setting="algorithm.x.isolation")


def test_bad_limits_are_refused_with_their_name():
    with pytest.raises(ValueError, match="isolation"):
        SandboxConfig(isolation="docker")
    with pytest.raises(ValueError, match="processes"):
        SandboxConfig(processes=0)


def test_concurrency_is_bounded_per_event_loop():
    box = Sandbox(SandboxConfig(concurrency=2))

    async def many():
        return await asyncio.gather(*(box.run(f"def f():\n    return {k}\n", ["f()"]) for k in range(6)))

    try:
        results = asyncio.run(many())
    finally:
        box.close()
    assert [result[0].value for result in results] == list(range(6))
    assert box.stats["max_in_flight"] == 2 and box.stats["runs"] == 6
