"""Splitting rows into provider jobs: consecutive, as few as possible, never over a limit."""

from __future__ import annotations

import pytest

from chatstream.batch import Limits
from chatstream.batch._split import Part, split
from chatstream.errors import InvalidInputError


def test_rows_under_the_limits_make_one_part() -> None:
    assert split([10, 20, 30], Limits(10, 100)) == [Part(0, 3, 60)]


def test_the_request_limit_cuts_parts() -> None:
    assert split([1] * 5, Limits(2, 100)) == [Part(0, 2, 2), Part(2, 2, 2), Part(4, 1, 1)]


def test_the_byte_limit_cuts_parts_counting_the_overhead() -> None:
    parts = split([40, 40, 40], Limits(10, 100), overhead=15)
    assert parts == [Part(0, 2, 95), Part(2, 1, 55)]
    assert all(part.size <= 100 for part in parts)


def test_a_row_exactly_at_the_limit_fits_alone() -> None:
    assert split([100, 1], Limits(10, 100)) == [Part(0, 1, 100), Part(1, 1, 1)]


def test_a_row_larger_than_a_job_is_refused_by_position() -> None:
    with pytest.raises(InvalidInputError) as caught:
        split([10, 101], Limits(10, 100))
    assert caught.value.where == "inputs[1]"


@pytest.mark.parametrize(("field", "value"), [("max_requests", 0), ("max_bytes", 0)])
def test_limits_below_one_are_refused(field: str, value: int) -> None:
    values = {"max_requests": 1, "max_bytes": 1, field: value}
    with pytest.raises(InvalidInputError) as caught:
        Limits(**values)
    assert caught.value.where == f"limits.{field}"
