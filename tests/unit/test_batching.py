"""Batching decisions, length-sorted chunking, order restore and offset maths."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.batching import (
    Limits,
    first_offsets,
    is_full,
    next_offsets,
    plan_chunks,
    restore_order,
    run_halving,
    wait_left_s,
)

LIMITS = Limits(max_records=4, max_tokens=100, max_wait_s=0.05)


@pytest.mark.parametrize(
    ("records", "tokens", "full"),
    [
        (0, 0, False),
        (3, 99, False),
        (4, 10, True),  # size
        (1, 100, True),  # token budget
        (2, 250, True),
        (5, 0, True),
    ],
)
def test_is_full_by_size_or_tokens(records: int, tokens: int, full: bool) -> None:
    assert is_full(records, tokens, LIMITS) is full


def test_wait_left_counts_down_from_the_first_record() -> None:
    assert wait_left_s(10.0, 10.0, LIMITS) == pytest.approx(0.05)
    assert wait_left_s(10.0, 10.03, LIMITS) == pytest.approx(0.02)
    assert wait_left_s(10.0, 10.2, LIMITS) == 0.0


def test_zero_wait_closes_at_once() -> None:
    assert wait_left_s(1.0, 1.0, Limits(4, 100, 0.0)) == 0.0


@pytest.mark.parametrize("bad", [(0, 10, 0.1), (1, 0, 0.1), (1, 10, -1.0)])
def test_limits_must_be_positive(bad: tuple[int, int, float]) -> None:
    with pytest.raises(ValueError):
        Limits(*bad)


def test_chunks_are_length_sorted_and_within_budget() -> None:
    lengths = [50, 3, 10, 4, 60, 5]
    chunks = plan_chunks(lengths, max_rows=3, max_tokens=100)
    # 3 rows of <= 5 tokens; then 10 and 50 (2 x 50 = 100 fits); 60 cannot join them (3 x 60 > 100).
    assert chunks == [[1, 3, 5], [2, 0], [4]]


def test_a_text_longer_than_the_budget_gets_its_own_chunk() -> None:
    assert plan_chunks([500, 2], max_rows=8, max_tokens=100) == [[1], [0]]


def test_no_chunks_for_nothing() -> None:
    assert plan_chunks([], max_rows=8, max_tokens=100) == []


@given(
    st.lists(st.integers(min_value=1, max_value=200), max_size=60),
    st.integers(min_value=1, max_value=16),
    st.integers(min_value=1, max_value=2000),
)
def test_chunk_plan_properties(lengths: list[int], max_rows: int, max_tokens: int) -> None:
    chunks = plan_chunks(lengths, max_rows=max_rows, max_tokens=max_tokens)
    assert sorted(i for c in chunks for i in c) == list(range(len(lengths)))
    flat = [lengths[i] for c in chunks for i in c]
    assert flat == sorted(flat)
    for chunk in chunks:
        assert len(chunk) <= max_rows
        assert len(chunk) == 1 or len(chunk) * max(lengths[i] for i in chunk) <= max_tokens
    # And results come back in arrival order.
    results = [[f"r{i}" for i in c] for c in chunks]
    assert restore_order(chunks, results) == [f"r{i}" for i in range(len(lengths))]


def test_restore_order_rejects_gaps() -> None:
    with pytest.raises(ValueError):
        restore_order([[0], [2]], [["a"], ["c"]])


def test_next_offsets_are_highest_plus_one_per_partition() -> None:
    positions = [("a", 0, 5), ("a", 0, 7), ("a", 1, 3), ("b", 0, 0), ("a", 0, 6)]
    assert next_offsets(positions) == {("a", 0): 8, ("a", 1): 4, ("b", 0): 1}


def test_first_offsets_are_lowest_per_partition() -> None:
    positions = [("a", 0, 5), ("a", 0, 7), ("a", 1, 3), ("a", 0, 6)]
    assert first_offsets(positions) == {("a", 0): 5, ("a", 1): 3}


def test_offsets_of_an_empty_batch() -> None:
    assert next_offsets([]) == {} and first_offsets([]) == {}


class OutOfMemory(RuntimeError):
    pass


def _run_with_budget(budget: int, calls: list[list[int]]) -> Callable[[Sequence[int]], list[str]]:
    """A forward pass over rows of these sizes that runs out of memory above `budget` in total."""

    def run(rows: Sequence[int]) -> list[str]:
        calls.append(list(rows))
        if sum(rows) > budget:
            raise OutOfMemory("CUDA out of memory")
        return [f"ok{r}" for r in rows]

    return run


def test_run_halving_splits_a_pass_that_runs_out_of_memory_until_it_fits() -> None:
    calls: list[list[int]] = []
    out = run_halving([1, 2, 3, 4], _run_with_budget(4, calls), lambda e: isinstance(e, OutOfMemory))
    assert out == ["ok1", "ok2", "ok3", "ok4"]
    assert calls == [[1, 2, 3, 4], [1, 2], [3, 4], [3], [4]]


def test_run_halving_gives_a_row_that_fails_alone_its_error_and_keeps_the_others() -> None:
    out = run_halving([1, 9, 2], _run_with_budget(5, []), lambda e: isinstance(e, OutOfMemory))
    assert out[0] == "ok1" and out[2] == "ok2"
    assert isinstance(out[1], OutOfMemory)


def test_run_halving_lets_other_errors_through() -> None:
    def broken(rows: Sequence[int]) -> list[str]:
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError, match="a bug"):
        run_halving([1, 2], broken, lambda e: isinstance(e, OutOfMemory))
