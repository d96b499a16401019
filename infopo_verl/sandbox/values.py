"""Rebuild a value a sandboxed process sent (``child.encode``'s tagged JSON) into fresh builtins, safely.

The input is untrusted: it is parsed with ``json.loads`` (size-capped by the caller), every node is checked
against the tag table, nesting is capped, and only builtin constructors run (no ``eval``, no ``pickle``, no import
by name). Anything unexpected raises :class:`ValueError`, which the judge turns into a failed test. The rebuilt
value holds only exact builtin types (and ``Decimal`` / ``Fraction`` / naive ``datetime`` types), so ``==`` on it
runs no code the sandboxed process chose.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import math
from typing import Any

__all__ = ["decode", "MAX_DEPTH"]

MAX_DEPTH = 64
"""Must equal ``child.MAX_DEPTH`` (checked by the tests)."""
MAX_HASHED_ITEMS = 10_000
"""Most items of one decoded set or dict (ours). Integers hash predictably, so a value of many colliding keys
would make building the set quadratic in the judge's process; 10k keys bound that to well under a second."""
MAX_FRACTION_DIGITS = 2_000
"""Longest numerator or denominator of a Fraction, in hex digits (ours): building one takes a gcd, which is
quadratic in the digits."""

_HEX_DIGITS = set("0123456789abcdef-")


def _hex_int(text: Any) -> int:
    if not isinstance(text, str) or not text or not set(text) <= _HEX_DIGITS:
        raise ValueError(f"bad integer encoding {text!r:.40}")
    return int(text, 16)


def _float(text: Any) -> float:
    if not isinstance(text, str) or len(text) > 40:
        raise ValueError(f"bad float encoding {text!r:.40}")
    value = float(text)  # accepts repr forms, 'nan', 'inf', '-inf'
    if math.isnan(value) and text.lstrip("-") != "nan":
        raise ValueError(f"bad float encoding {text!r:.40}")
    return value


def _items(node: list, count: int) -> list:
    if len(node) != count + 1:
        raise ValueError(f"tag {node[0]!r} takes {count} field(s), got {len(node) - 1}")
    return node[1:]


def decode(node: Any, depth: int = 0) -> Any:
    """The builtin value that ``node`` (one decoded JSON tree from ``child.encode``) describes."""
    if depth > MAX_DEPTH + 1:
        raise ValueError(f"value nested deeper than {MAX_DEPTH}")
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise ValueError("not a tagged value")
    tag = node[0]
    if tag == "n":
        _items(node, 0)
        return None
    if tag == "b":
        (value,) = _items(node, 1)
        if not isinstance(value, bool):
            raise ValueError("bad bool")
        return value
    if tag == "i":
        return _hex_int(_items(node, 1)[0])
    if tag == "f":
        return _float(_items(node, 1)[0])
    if tag == "c":
        real, imag = _items(node, 2)
        return complex(_float(real), _float(imag))
    if tag == "s":
        (value,) = _items(node, 1)
        if not isinstance(value, str):
            raise ValueError("bad str")
        return value
    if tag == "y":
        (value,) = _items(node, 1)
        if not isinstance(value, str):
            raise ValueError("bad bytes")
        return bytes.fromhex(value)
    if tag in ("l", "t", "S", "F", "d"):
        (children,) = _items(node, 1)
        if not isinstance(children, list):
            raise ValueError(f"bad {tag} container")
        if tag in ("d", "S", "F") and len(children) > MAX_HASHED_ITEMS:
            raise ValueError(f"a set or dict of more than {MAX_HASHED_ITEMS} items is not accepted")
        if tag == "d":
            pairs = []
            for pair in children:
                if not isinstance(pair, list) or len(pair) != 2:
                    raise ValueError("bad dict item")
                pairs.append((decode(pair[0], depth + 1), decode(pair[1], depth + 1)))
            try:
                return dict(pairs)
            except TypeError as error:  # an unhashable key
                raise ValueError(f"bad dict key ({error})") from None
        items = [decode(child, depth + 1) for child in children]
        try:
            return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
        except TypeError as error:
            raise ValueError(f"bad set item ({error})") from None
    if tag == "D":
        (value,) = _items(node, 1)
        if not isinstance(value, str) or len(value) > 200:
            raise ValueError("bad Decimal")
        try:
            return decimal.Decimal(value)
        except decimal.InvalidOperation:
            raise ValueError("bad Decimal") from None
    if tag == "Q":
        numerator, denominator = _items(node, 2)
        if any(not isinstance(part, str) or len(part) > MAX_FRACTION_DIGITS for part in (numerator, denominator)):
            raise ValueError(f"a Fraction part longer than {MAX_FRACTION_DIGITS} hex digits is not accepted")
        try:
            return fractions.Fraction(_hex_int(numerator), _hex_int(denominator))
        except ZeroDivisionError:
            raise ValueError("bad Fraction") from None
    if tag in ("date", "time", "datetime"):
        (value,) = _items(node, 1)
        if not isinstance(value, str) or len(value) > 40:
            raise ValueError(f"bad {tag}")
        parse = {"date": datetime.date, "time": datetime.time, "datetime": datetime.datetime}[tag].fromisoformat
        result = parse(value)
        if getattr(result, "tzinfo", None) is not None:
            raise ValueError(f"bad {tag}: only naive values are sent")
        return result
    if tag == "timedelta":
        days, seconds, microseconds = _items(node, 3)
        if not all(type(part) is int for part in (days, seconds, microseconds)):
            raise ValueError("bad timedelta")
        return datetime.timedelta(days=days, seconds=seconds, microseconds=microseconds)
    raise ValueError(f"unknown tag {tag!r:.20}")
