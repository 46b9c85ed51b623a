"""scoring/inputs/npi.py: the CMS NPI rule, ten digits whose last is the Luhn check digit of
"80840" + the first nine (the prefix contributes a constant 24 to the Luhn sum).

Hand-worked check digits (double every other digit of the nine-digit base, starting with
its rightmost; add the digits of the products, the other digits and 24; the check digit
brings the sum up to the next multiple of 10):
- 123456789 (the CMS worked example): 9,7,5,3,1 doubled -> 18,14,10,6,2 -> digits
  1+8+1+4+1+0+6+2 = 23; undoubled 8+6+4+2 = 20; 24 + 23 + 20 = 67 -> 3: 1234567893.
- 000000000: 24 -> 6: 0000000006.
- 999999999: doubled 9 -> 18 -> 1+8 = 9, five times = 45; undoubled 4 x 9 = 36;
  24 + 45 + 36 = 105 -> 5: 9999999995.
- 100000000: the 1 sits 9th from the right (doubled) -> 2; 24 + 2 = 26 -> 4: 1000000004.
- 000000001: the 1 is rightmost (doubled) -> 2; 26 -> 4: 0000000014.
- 000000010: the 1 is second from the right (not doubled) -> 1; 25 -> 5: 0000000105.
"""

from __future__ import annotations

import polars as pl
from polars.testing import assert_frame_equal, assert_series_equal

from scoring.inputs.npi import (
    luhn_check_digit,
    make_npi,
    npi_problem,
    npi_problems,
    npi_reasons,
    npi_to_int,
    npi_to_str,
)

BASES = [123456789, 0, 999999999, 100000000, 1, 10]
CHECK_DIGITS = [3, 6, 5, 4, 4, 5]  # worked out in the module docstring


def test_luhn_check_digit_of_hand_worked_bases() -> None:
    out = pl.DataFrame({"base": BASES}).select(luhn_check_digit(pl.col("base")).alias("digit"))
    assert_frame_equal(out, pl.DataFrame({"digit": CHECK_DIGITS}))


def test_make_npi_appends_the_check_digit() -> None:
    out = pl.DataFrame({"base": BASES}).select(make_npi(pl.col("base")).alias("npi"))
    expected = [1234567893, 6, 9999999995, 1000000004, 14, 105]
    assert_frame_equal(out, pl.DataFrame({"npi": expected}))


def test_npi_problem_reasons() -> None:
    npis = [
        "1234567893",  # valid
        "0000000006",  # valid, leading zeros
        "1234567890",  # check digit should be 3
        "1234567894",
        "123456789",  # nine digits
        "12345678903",  # eleven digits
        "12345678a3",
        " 234567893",
        "",
        None,
    ]
    out = pl.DataFrame({"npi": npis}).select(npi_problem(pl.col("npi")).alias("reason"))
    expected = [
        None,
        None,
        "npi check digit invalid",
        "npi check digit invalid",
        "npi not 10 digits",
        "npi not 10 digits",
        "npi not 10 digits",
        "npi not 10 digits",
        "npi missing",
        "npi missing",
    ]
    assert_frame_equal(out, pl.DataFrame({"reason": expected}, schema={"reason": pl.String}))


def test_npi_problems_lists_each_invalid_distinct_value_once() -> None:
    values = pl.Series(
        "npi", ["1234567890", "1234567893", "1234567890", "12", "", None, "9999999995"]
    )
    out = npi_problems(values).sort("npi")
    expected = pl.DataFrame(
        {
            "npi": ["12", "1234567890"],
            "reason": ["npi not 10 digits", "npi check digit invalid"],
        }
    )
    assert_frame_equal(out, expected)


def test_npi_reasons_per_row_with_and_without_a_problems_table() -> None:
    column = pl.Series("npi", ["1234567893", "1234567890", None, "", "12", "1234567890"])
    expected = pl.Series(
        "npi_reason",
        [
            None,
            "npi check digit invalid",
            "npi missing",
            "npi missing",
            "npi not 10 digits",
            "npi check digit invalid",
        ],
        dtype=pl.String,
    )
    assert_series_equal(npi_reasons(column), expected)
    problems = pl.DataFrame(
        {"npi": ["12", "1234567890"], "reason": ["npi not 10 digits", "npi check digit invalid"]}
    )
    assert_series_equal(npi_reasons(column, problems), expected)
    valid_only = pl.Series("npi", ["1234567893", None])
    assert_series_equal(
        npi_reasons(valid_only, problems.clear()),
        pl.Series("npi_reason", [None, "npi missing"], dtype=pl.String),
    )


def test_npi_int_and_string_round_trip_keeps_leading_zeros() -> None:
    frame = pl.DataFrame({"npi": ["0000000006", "1234567893"]})
    as_int = frame.select(npi_to_int(pl.col("npi")))
    assert_frame_equal(as_int, pl.DataFrame({"npi": [6, 1234567893]}))
    back = as_int.select(npi_to_str(pl.col("npi")))
    assert_frame_equal(back, frame)
