"""``row_spans`` and ``turn_layout``: turns and feedback spans off the mask, against a slow loop on random masks."""

from __future__ import annotations

import random

import pytest
import torch

from infopo_verl.core.turns import row_spans, turn_layout


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


def layout_oracle(mask: list[list[float]]) -> list[tuple[int, int, int, int, bool]]:
    """(row, start, end, number, is_final) of every turn, row by row with the loop oracle."""
    turns = []
    for row, values in enumerate(mask):
        runs, _ = oracle([int(value != 0) for value in values])
        turns += [(row, start, end, number + 1, number + 1 == len(runs)) for number, (start, end) in enumerate(runs)]
    return turns


def layout_rows(layout) -> list[tuple[int, int, int, int, bool]]:
    columns = (layout.row, layout.start, layout.end, layout.number, layout.is_final)
    return [tuple(values) for values in zip(*(column.tolist() for column in columns))]


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.float32, torch.int8])
@pytest.mark.parametrize("seed", range(40))
def test_turn_layout_matches_the_loop_oracle_on_batches(seed, dtype):
    """Turns that touch both row boundaries, runs of different nonzero values (1 and 2 are both agent: the value
    change inside a run is no boundary), empty rows and single-token turns, in every mask dtype verl uses."""
    rng = random.Random(seed)
    bs, length = rng.randint(1, 6), rng.randint(1, 12)
    values = [[rng.choice([0, 0, 1, 1, 2]) if dtype != torch.bool else rng.random() < 0.5 for _ in range(length)]
              for _ in range(bs)]
    if rng.random() < 0.5:
        values[0] = [1] * length  # a row that is one turn from its first to its last position
    mask = torch.tensor(values).to(dtype)
    layout, expected = turn_layout(mask), layout_oracle(values)
    assert layout_rows(layout) == expected
    assert layout.turns_per_row.tolist() == [sum(1 for turn in expected if turn[0] == row) for row in range(bs)]


def test_turn_layout_of_empty_batches():
    for shape in [(0, 5), (3, 0), (0, 0)]:
        layout = turn_layout(torch.zeros(shape, dtype=torch.int64))
        assert layout.row.numel() == 0 and layout.turns_per_row.tolist() == [0] * shape[0]


def test_turn_layout_of_a_non_contiguous_mask():
    mask = torch.tensor([[1, 0, 1, 1], [0, 1, 1, 0]]).t().contiguous().t()  # same values, column-major memory
    assert not mask.is_contiguous()
    assert layout_rows(turn_layout(mask)) == layout_oracle(mask.tolist())
