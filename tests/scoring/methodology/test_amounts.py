"""amounts.py: amounts summed exactly as integer micro-units (1e-6), then divided
back once, so totals never depend on the order of the rows."""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.methodology.amounts import from_micros, micros

CFG = Settings()


def test_micros_are_int128_units_of_one_millionth() -> None:
    frame = pl.DataFrame({"payments": [0.1, 1.0, 1234.567891, 0.0, None]})
    out = frame.select(micros("payments", CFG))
    expected = pl.DataFrame(
        {"payments": [100_000, 1_000_000, 1_234_567_891, 0, None]}, schema={"payments": pl.Int128}
    )
    assert_frame_equal(out, expected)


def test_sum_of_micros_is_exact_where_a_float_sum_is_not() -> None:
    # 0.1 + 0.2 is 0.30000000000000004 in floats; 100000 + 200000 micros is 300000 -> 0.3.
    frame = pl.DataFrame({"payments": [0.1, 0.2]})
    assert frame["payments"].sum() != 0.3  # the float sum the module exists to avoid
    out = frame.select(micros("payments", CFG).sum()).select(from_micros("payments", CFG))
    assert_frame_equal(out, pl.DataFrame({"payments": [0.3]}))


def test_order_of_rows_does_not_change_a_total() -> None:
    values = [1e-6, 1e12, 0.7, -0.0, 3.3, 1e-6, 2.2]
    totals = [
        pl.DataFrame({"payments": order})
        .select(micros("payments", CFG).sum())
        .select(from_micros("payments", CFG))
        for order in (values, values[::-1], sorted(values))
    ]
    # 1 + 1e18 + 700000 + 0 + 3300000 + 1 + 2200000 micros = 1000000000006200002 micros
    expected = pl.DataFrame({"payments": [1_000_000_000_006_200_002 / 1_000_000]})
    for total in totals:
        assert_frame_equal(total, expected)


def test_from_micros_is_the_correctly_rounded_division() -> None:
    # 70000 / 1e6 is 0.07 under IEEE division (a multiplication by 1e-6 gives 0.06999999999999999)
    totals = pl.DataFrame(
        {"amount": [70_000, 10**19, None]}, schema={"amount": pl.Int128}
    )  # 10**19 micros: ten rows of 1e12 dollars, past Int64's range
    out = totals.select(from_micros("amount", CFG))
    assert_frame_equal(out, pl.DataFrame({"amount": [0.07, 1e13, None]}))
