"""``row_spans``: one row's turns and feedback spans off its mask, against a slow obvious loop on random masks."""

from __future__ import annotations

import random

import pytest

from infopo_verl.core.turns import row_spans


def oracle(mask: list[int]) -> tuple[list[tuple[int, int]], list[tuple[int, int] | None]]:
    runs, start = [], None
    for position, value in enumerate([*mask, 0]):
        if value and start is None:
            start = position
        if not value and start is not None:
            runs.append((start, position - 1))
            start = None
    gaps = []
    for index, (_, end) in enumerate(runs):
        stop = runs[index + 1][0] if index + 1 < len(runs) else len(mask)
        gaps.append((end + 1, stop - 1) if stop > end + 1 else None)
    return runs, gaps


@pytest.mark.parametrize("seed", range(200))
def test_row_spans_matches_the_loop_oracle(seed):
    rng = random.Random(seed)
    mask = [int(rng.random() < 0.5) for _ in range(rng.randint(0, 24))]
    assert row_spans(mask) == oracle(mask)


def test_row_spans_edge_cases():
    assert row_spans([]) == ([], [])
    assert row_spans([0, 0, 0]) == ([], [])  # a failure's zeroed row has no turn
    assert row_spans([1, 1, 1]) == ([(0, 2)], [None])  # cut at the budget in the middle of a turn
    assert row_spans([0, 1, 0, 0, 1, 1]) == ([(1, 1), (4, 5)], [(2, 3), None])
