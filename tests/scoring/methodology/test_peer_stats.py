"""peer_stats.py: billing metrics, eligibility, group medians/MADs, growth groups and
the m1 rank counts behind the percentile (SPEC §4 component 1 and 3)."""

from __future__ import annotations

import math

import polars as pl
from polars.testing import assert_frame_equal

from scoring.config import Settings
from scoring.methodology.peer_stats import (
    FALLBACK_KEYS,
    PRIMARY_KEYS,
    billing_group_stats,
    billing_metrics,
    growth_group_stats,
    m1_percent_rank_counts,
    m1_rank_table,
    member_rank_counts,
)

CFG = Settings()
KEY_SCHEMA = {"peer_taxonomy": pl.String, "peer_state": pl.String, "year": pl.Int32}

# eligible provider-years: (npi, taxonomy, state, year, m1, x1, x2, x3); the x values are
# chosen (not derived from m1) so that medians and MADs are easy to work out
MEMBERS = [
    (1, "S", "NY", 2022, 8.0, 7.0, 7.0, 7.0),
    (2, "T", "CA", 2022, 20.0, 1.0, 0.5, 10.0),
    (3, "T", "CA", 2022, 5.0, 2.0, 0.5, 7.0),
    (4, "T", "CA", 2022, 20.0, 4.0, 0.5, 3.0),
    (5, "T", "CA", 2023, 15.0, 5.0, 1.0, 9.0),
    (6, "T", "NY", 2022, 10.0, 1.0, 0.0, 2.0),
    (7, "T", "NY", 2022, 20.0, 3.0, 1.0, 2.0),
    (8, "T", "NY", 2022, 20.0, 5.0, 2.0, 2.0),
    (9, "T", "NY", 2022, 30.0, 11.0, 3.0, 10.0),
]


def members() -> pl.LazyFrame:
    return pl.LazyFrame(
        MEMBERS,
        schema={
            "npi": pl.Int64,
            **KEY_SCHEMA,
            **dict.fromkeys(["m1", "x1", "x2", "x3"], pl.Float64),
        },
        orient="row",
    )


def test_billing_metrics_and_eligibility() -> None:
    py = pl.LazyFrame(
        {
            "payments": [1000.0, 5000.0, 5000.0],
            "claims": [0.0, 100.0, 99.5],
            "beneficiaries": [0.0, 40.0, 200.0],
        }
    )
    # m1 = payments / max(claims, 1), m2 = claims / max(beneficiaries, 1), m3 = payments,
    # x_k = ln(m_k + 1); eligible: claims >= 100 (100 itself is eligible)
    expected = py.collect().with_columns(
        pl.Series("m1", [1000 / 1, 5000 / 100, 5000 / 99.5]),
        pl.Series("x1", [math.log(1001), math.log(51), math.log(5000 / 99.5 + 1)]),
        pl.Series("x2", [math.log(0 / 1 + 1), math.log(100 / 40 + 1), math.log(99.5 / 200 + 1)]),
        pl.Series("x3", [math.log(1001), math.log(5001), math.log(5001)]),
        pl.Series("eligible", [False, True, False]),
    )
    out = billing_metrics(py, CFG).collect()
    assert_frame_equal(out, expected, check_exact=False, rel_tol=1e-14, abs_tol=0)


def stats_frame(rows: list[tuple], keys: list[str]) -> pl.DataFrame:
    names = ["med_x1", "mad_x1", "med_x2", "mad_x2", "med_x3", "mad_x3"]
    schema = {"group_id": pl.UInt32, **{k: KEY_SCHEMA[k] for k in keys}, "n": pl.Int64}
    schema.update(dict.fromkeys(names, pl.Float64))
    return pl.DataFrame(rows, schema=schema, orient="row")


def test_billing_group_stats_primary() -> None:
    # (T, CA, 2022): x1 [1, 2, 4] -> median 2, |dev| [1, 0, 2] -> MAD 1;
    #                x2 [.5, .5, .5] -> .5, MAD 0; x3 [10, 7, 3] -> 7, |dev| [3, 0, 4] -> 3
    # (T, NY, 2022): x1 [1, 3, 5, 11] -> (3 + 5) / 2 = 4, |dev| [3, 1, 1, 7] -> (1 + 3) / 2 = 2;
    #                x2 [0, 1, 2, 3] -> 1.5, |dev| [1.5, .5, .5, 1.5] -> 1; x3 [2, 2, 2, 10] -> 2,
    #                |dev| [0, 0, 0, 8] -> 0
    # one-member groups: the value itself, MAD 0. group_id numbers the sorted keys.
    expected = stats_frame(
        [
            (0, "S", "NY", 2022, 1, 7.0, 0.0, 7.0, 0.0, 7.0, 0.0),
            (1, "T", "CA", 2022, 3, 2.0, 1.0, 0.5, 0.0, 7.0, 3.0),
            (2, "T", "CA", 2023, 1, 5.0, 0.0, 1.0, 0.0, 9.0, 0.0),
            (3, "T", "NY", 2022, 4, 4.0, 2.0, 1.5, 1.0, 2.0, 0.0),
        ],
        PRIMARY_KEYS,
    )
    assert_frame_equal(billing_group_stats(members(), PRIMARY_KEYS).collect(), expected)


def test_billing_group_stats_fallback_pools_the_states() -> None:
    # (T, 2022): x1 [1, 2, 4, 1, 3, 5, 11] -> sorted [1, 1, 2, 3, 4, 5, 11], median 3,
    #   |dev| sorted [0, 1, 1, 2, 2, 2, 8] -> 2;
    # x2 [.5, .5, .5, 0, 1, 2, 3] -> sorted [0, .5, .5, .5, 1, 2, 3], median .5,
    #   |dev| sorted [0, 0, 0, .5, .5, 1.5, 2.5] -> .5;
    # x3 [10, 7, 3, 2, 2, 2, 10] -> sorted [2, 2, 2, 3, 7, 10, 10], median 3,
    #   |dev| sorted [0, 1, 1, 1, 4, 7, 7] -> 1
    expected = stats_frame(
        [
            (0, "S", 2022, 1, 7.0, 0.0, 7.0, 0.0, 7.0, 0.0),
            (1, "T", 2022, 7, 3.0, 2.0, 0.5, 0.5, 3.0, 1.0),
            (2, "T", 2023, 1, 5.0, 0.0, 1.0, 0.0, 9.0, 0.0),
        ],
        FALLBACK_KEYS,
    )
    assert_frame_equal(billing_group_stats(members(), FALLBACK_KEYS).collect(), expected)


def rank_frame(rows: list[tuple]) -> pl.DataFrame:
    schema = {"group_id": pl.UInt32, "m1": pl.Float64, "n_eq": pl.Int64, "n_le": pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row")


PRIMARY_RANKS = rank_frame(
    [
        (0, 8.0, 1, 1),
        (1, 5.0, 1, 1),
        (1, 20.0, 2, 3),  # two members at 20
        (2, 15.0, 1, 1),
        (3, 10.0, 1, 1),
        (3, 20.0, 2, 3),
        (3, 30.0, 1, 4),
    ]
)


def test_m1_rank_tables_count_equal_and_at_most() -> None:
    stats = billing_group_stats(members(), PRIMARY_KEYS)
    table = m1_rank_table(members(), stats, PRIMARY_KEYS).collect()
    assert table["m1"].is_sorted()
    assert_frame_equal(table.sort("group_id", "m1"), PRIMARY_RANKS)
    # fallback (T, 2022) m1: [20, 5, 20, 10, 20, 20, 30]
    fallback = billing_group_stats(members(), FALLBACK_KEYS)
    expected = rank_frame(
        [
            (0, 8.0, 1, 1),
            (1, 5.0, 1, 1),
            (1, 10.0, 1, 2),
            (1, 20.0, 4, 6),
            (1, 30.0, 1, 7),
            (2, 15.0, 1, 1),
        ]
    )
    got = m1_rank_table(members(), fallback, FALLBACK_KEYS).collect().sort("group_id", "m1")
    assert_frame_equal(got, expected)


def test_member_rank_counts_below_and_equal() -> None:
    stats = billing_group_stats(members(), PRIMARY_KEYS)
    out = member_rank_counts(members(), stats, PRIMARY_RANKS.lazy(), PRIMARY_KEYS, "p")
    # n_lt = n_le - n_eq of the member's own m1 in its group
    expected = pl.DataFrame(
        [
            (1, 2022, 0, 1),
            (2, 2022, 1, 2),
            (3, 2022, 0, 1),
            (4, 2022, 1, 2),
            (5, 2023, 0, 1),
            (6, 2022, 0, 1),
            (7, 2022, 1, 2),
            (8, 2022, 1, 2),
            (9, 2022, 3, 1),
        ],
        schema={"npi": pl.Int64, "year": pl.Int32, "p_n_lt": pl.Int64, "p_n_eq": pl.Int64},
        orient="row",
    )
    assert_frame_equal(out.collect().sort("npi"), expected)


def test_percent_rank_counts_of_rows_that_are_not_members() -> None:
    rows = pl.LazyFrame(
        [
            (100, 2022, 25.0, 3),  # between 20 and 30: 3 below, none equal
            (101, 2022, 5.0, 3),  # below every member of group 3
            (102, 2022, 20.0, 3),  # equal to two members, one below
            (103, 2022, 99.0, 3),  # above all four
            (104, 2022, 25.0, 2),  # group 2 holds only 15
        ],
        schema={"npi": pl.Int64, "year": pl.Int32, "m1": pl.Float64, "group_id": pl.UInt32},
        orient="row",
    )
    expected = pl.DataFrame(
        [
            (100, 2022, 3, 0),
            (101, 2022, 0, 0),
            (102, 2022, 1, 2),
            (103, 2022, 4, 0),
            (104, 2022, 1, 0),
        ],
        schema={"npi": pl.Int64, "year": pl.Int32, "f_n_lt": pl.Int64, "f_n_eq": pl.Int64},
        orient="row",
    )
    out = m1_percent_rank_counts(rows, PRIMARY_RANKS.lazy(), "f").collect().sort("npi")
    assert_frame_equal(out, expected)


def test_growth_group_stats_any_size_and_no_null_growth() -> None:
    rows = pl.LazyFrame(
        [
            ("T", "CA", 2022, 1.0),
            ("T", "CA", 2022, 0.0),
            ("T", "CA", 2022, None),  # a first year: no growth, not a member
            ("T", "CA", 2023, 0.5),
            ("T", "CA", 2023, 0.0),
            ("T", "CA", 2023, 3.0),
            ("T", "CA", 2023, 10.0),
            ("T", "NY", 2023, 0.5),
        ],
        schema={**KEY_SCHEMA, "g": pl.Float64},
        orient="row",
    )
    # (T, CA, 2022): [1, 0] -> median .5, |dev| [.5, .5] -> .5
    # (T, CA, 2023): [0, .5, 3, 10] -> (0.5 + 3) / 2 = 1.75, |dev| [1.75, 1.25, 1.25, 8.25]
    #   -> sorted [1.25, 1.25, 1.75, 8.25] -> (1.25 + 1.75) / 2 = 1.5
    # (T, NY, 2023): one member, MAD 0
    expected = pl.DataFrame(
        [("T", "CA", 2022, 0.5, 0.5), ("T", "CA", 2023, 1.75, 1.5), ("T", "NY", 2023, 0.5, 0.0)],
        schema={**KEY_SCHEMA, "med_g": pl.Float64, "mad_g": pl.Float64},
        orient="row",
    )
    assert_frame_equal(growth_group_stats(rows).collect(), expected)
