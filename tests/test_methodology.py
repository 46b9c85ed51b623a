"""SPEC §4 (scoring methodology v1) on tiny hand-built datasets, scored end to end.

Every expected value is worked out by hand in the test from the SPEC formulas
(plain Python arithmetic), never by calling the scoring package. The only
exception is the label-boundary unit test, which applies `label_expr` to a
hand-made risk_score column and asserts the SPEC labels.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from scoring.config import Settings
from scoring.methodology.composite import label_expr
from tests.builders import by_npi, npi, score, write_dataset

TAX = "207Q00000X"
ALPHA = 0.7

BILLING_FLAG = "Billing > 95th percentile vs. state/taxonomy peers (payments per claim)."
GROWTH_FLAG = "Rapid growth and high billing intensity vs. peers."
EXCLUSION_FLAG = "Direct or owner-level exclusion on record."


def concentration_flag(program: str) -> str:
    return f"Highly concentrated in a single payer program ({program})."


def ownership_flag(n: int) -> str:
    return f"Ownership chain includes {n} excluded provider{'' if n == 1 else 's'}."


# --------------------------------------------------------------------------- helpers


def pay(i: int, year: int = 2023, **kw: Any) -> dict[str, Any]:
    """One payment row for npi(i)."""
    return {"npi": npi(i), "year": year, **kw}


def run(
    tmp_path: Path,
    *,
    payments: list[dict[str, Any]],
    providers: list[dict[str, Any]] = (),  # type: ignore[assignment]
    settings: dict[str, Any] | None = None,
    auto_providers: bool = True,
    **tables: Any,
) -> dict[str, dict[str, Any]]:
    """Write the dataset and score it; by default every paying NPI also gets a providers row
    with the taxonomy/state of its first payment row (so peer attributes are explicit)."""
    providers = list(providers)
    if auto_providers:
        known = {p["npi"] for p in providers}
        for row in payments:
            if row["npi"] not in known:
                known.add(row["npi"])
                providers.append(
                    {
                        "npi": row["npi"],
                        "taxonomy_1": row.get("taxonomy", TAX),
                        "state": row.get("state", "CA"),
                    }
                )
    data = write_dataset(tmp_path / "data", providers=providers, payments=payments, **tables)
    return by_npi(score(data, tmp_path / "run", **(settings or {})))


def approx(value: float) -> Any:
    return pytest.approx(value, abs=1e-9)


def rounded(value: float, k: int) -> float:
    """round(value, k), refusing values whose rounding would hinge on a half (ambiguous)."""
    scaled = value * 10**k
    assert abs(abs(scaled - math.floor(scaled)) - 0.5) > 1e-6, f"ambiguous rounding: {value}"
    return round(value, k)


def logistic(z: float) -> float:
    """100 / (1 + exp(-z / 2)), unrounded."""
    return 100.0 / (1.0 + math.exp(-z / 2.0))


def x_of(m: float) -> float:
    """x = ln(m + EPS), EPS = 1.0."""
    return math.log(m + 1.0)


def metrics(payments: float, claims: float, beneficiaries: float) -> tuple[float, float, float]:
    """(x1, x2, x3) for m1 = payments/max(claims,1), m2 = claims/max(bene,1), m3 = payments."""
    return (
        x_of(payments / max(claims, 1.0)),
        x_of(claims / max(beneficiaries, 1.0)),
        x_of(payments),
    )


def robust_z(value: float, members: list[float]) -> float:
    """clip((v - median) / (1.4826 * max(MAD, 1e-9)), -5, 5) over the given group values."""
    med = statistics.median(members)
    mad = statistics.median([abs(v - med) for v in members])
    return max(-5.0, min(5.0, (value - med) / (1.4826 * max(mad, 1e-9))))


def year_score(target: tuple[float, ...], members: list[tuple[float, ...]]) -> float:
    """Mean over k of max(z_k, 0)."""
    zs = [max(robust_z(target[k], [m[k] for m in members]), 0.0) for k in range(3)]
    return sum(zs) / 3.0


# --------------------------------------------------------------------------- billing outlier


def test_mad_zero_uses_floor_and_clips_z_to_cap(tmp_path):
    # 50 identical eligible peers: every MAD is 0, so the denominator is 1.4826 * 1e-9
    # and any distance from the median saturates at the z cap of +-5.
    same = {"payments": 10000.0, "claims": 100.0, "beneficiaries": 50.0}
    payments = [pay(i, **same) for i in range(1, 51)]
    # above the median on m1, m2 and m3 -> z = (5, 5, 5)
    payments.append(pay(51, payments=20000.0, claims=100.0, beneficiaries=25.0))
    # a hair above on m1 and m3, equal on m2 -> z = (5, 0, 5)
    payments.append(pay(52, payments=10000.01, claims=100.0, beneficiaries=50.0))
    # below the median: z = (-5, 0, -5) -> all clipped to 0 by max(z, 0)
    payments.append(pay(53, payments=5000.0, claims=100.0, beneficiaries=50.0))
    scores = run(tmp_path, payments=payments)

    # 53 eligible members, the median of each x_k is the common value and MAD = 0
    assert scores[npi(51)]["billing_outlier_score"] == approx(rounded(logistic(5.0), 2))
    assert scores[npi(51)]["billing_outlier_score"] == approx(92.41)
    assert scores[npi(52)]["billing_outlier_score"] == approx(rounded(logistic(10.0 / 3.0), 2))
    assert scores[npi(53)]["billing_outlier_score"] == approx(50.0)
    assert scores[npi(1)]["billing_outlier_score"] == approx(50.0)
    for i in (1, 51, 52, 53):
        assert scores[npi(i)]["peer_count"] == 53


def test_empty_peer_group_gives_zero_z_peer_count_zero_and_percentile_50(tmp_path):
    # The lonely provider-year is not eligible (claims 10) and nobody else shares its
    # taxonomy: neither a primary nor a fallback group exists -> z = 0 for all metrics.
    lonely_tax = "390200000X"
    payments = [
        pay(1, payments=1_000_000.0, claims=10.0, beneficiaries=1.0, taxonomy=lonely_tax),
        *[pay(i, payments=1000.0 * i, claims=100.0, beneficiaries=50.0) for i in (2, 3, 4)],
    ]
    scores = run(tmp_path, payments=payments)
    lonely = scores[npi(1)]
    assert lonely["peer_count"] == 0
    assert lonely["peer_taxonomy"] == lonely_tax
    assert lonely["billing_outlier_percentile"] == approx(50.0)
    assert lonely["billing_outlier_score"] == approx(50.0)  # 100 / (1 + exp(0)) = 50
    # the others do have a (fallback) group of 3 eligible members
    assert scores[npi(2)]["peer_count"] == 3


def _fallback_dataset(n_ca: int) -> list[dict[str, Any]]:
    """n_ca eligible CA members, 10 eligible NY members, one ineligible CA provider."""
    payments = [
        pay(i, payments=10000.0 + 100.0 * i, claims=100.0, beneficiaries=50.0, state="CA")
        for i in range(1, n_ca + 1)
    ]
    payments += [
        pay(100 + j, payments=50000.0 + 100.0 * j, claims=100.0, beneficiaries=50.0, state="NY")
        for j in range(1, 11)
    ]
    # claims 99: not a member of any group, so CA still has exactly n_ca eligible members
    payments.append(pay(200, payments=10000.0, claims=99.0, beneficiaries=50.0, state="CA"))
    return payments


def test_primary_group_with_49_eligible_members_falls_back_to_taxonomy_year_group(tmp_path):
    payments = _fallback_dataset(49)
    scores = run(tmp_path, payments=payments)
    ca = [metrics(10000.0 + 100.0 * i, 100.0, 50.0) for i in range(1, 50)]
    ny = [metrics(50000.0 + 100.0 * j, 100.0, 50.0) for j in range(1, 11)]
    fallback = ca + ny  # (taxonomy_10, year): 59 eligible members

    target = scores[npi(49)]  # the highest-paid CA member
    expected_sb = rounded(logistic(year_score(ca[-1], fallback)), 2)
    assert target["peer_count"] == 59
    assert target["peer_state"] == "CA"  # stays the provider's state
    assert target["peer_taxonomy"] == TAX
    assert target["billing_outlier_score"] == approx(expected_sb)
    # m1 = 149 ranks 49th of 59 in the fallback group: (49 - 1) / (59 - 1) x 100
    assert target["billing_outlier_percentile"] == approx(rounded(48 / 58 * 100, 2))
    assert scores[npi(200)]["peer_count"] == 59
    assert scores[npi(101)]["peer_count"] == 59  # NY primary has 10 members -> fallback
    assert scores[npi(101)]["peer_state"] == "NY"


def test_primary_group_with_50_eligible_members_is_used(tmp_path):
    payments = _fallback_dataset(50)
    scores = run(tmp_path, payments=payments)
    ca = [metrics(10000.0 + 100.0 * i, 100.0, 50.0) for i in range(1, 51)]

    target = scores[npi(50)]  # the highest-paid CA member
    expected_sb = rounded(logistic(year_score(ca[-1], ca)), 2)
    assert target["peer_count"] == 50
    assert target["peer_state"] == "CA"
    assert target["billing_outlier_score"] == approx(expected_sb)
    # highest m1 of the 50 CA members: (50 - 1) / (50 - 1) x 100
    assert target["billing_outlier_percentile"] == approx(100.0)
    assert scores[npi(200)]["peer_count"] == 50
    assert scores[npi(101)]["peer_count"] == 60  # NY still uses the fallback (50 + 10)


def test_claims_99_is_ineligible_but_scored_against_the_group_claims_100_is_a_member(tmp_path):
    base = [
        pay(i, payments=10000.0 + 100.0 * i, claims=100.0, beneficiaries=50.0) for i in range(1, 51)
    ]
    payments = [
        *base,
        pay(60, payments=30000.0, claims=100.0, beneficiaries=50.0),  # eligible
        pay(61, payments=30000.0, claims=99.0, beneficiaries=50.0),  # not eligible
    ]
    scores = run(tmp_path, payments=payments)
    members = [metrics(10000.0 + 100.0 * i, 100.0, 50.0) for i in range(1, 51)]
    members.append(metrics(30000.0, 100.0, 50.0))  # npi(60) is a member, npi(61) is not

    eligible, ineligible = scores[npi(60)], scores[npi(61)]
    assert eligible["peer_count"] == 51
    assert ineligible["peer_count"] == 51
    assert eligible["billing_outlier_score"] == approx(
        rounded(logistic(year_score(metrics(30000.0, 100.0, 50.0), members)), 2)
    )
    expected_ineligible = rounded(logistic(year_score(metrics(30000.0, 99.0, 50.0), members)), 2)
    assert expected_ineligible > 50.0
    assert ineligible["billing_outlier_score"] == approx(expected_ineligible)
    assert eligible["billing_outlier_percentile"] == approx(100.0)  # top m1 of 51 members
    assert ineligible["billing_outlier_percentile"] == approx(50.0)  # 0.5 x 100


def test_percentile_with_single_eligible_member_is_50(tmp_path):
    payments = [pay(1, payments=5000.0, claims=100.0, beneficiaries=10.0)]
    scores = run(tmp_path, payments=payments)
    row = scores[npi(1)]
    assert row["peer_count"] == 1
    assert row["billing_outlier_percentile"] == approx(50.0)
    assert row["billing_outlier_score"] == approx(50.0)  # z against itself is 0


def test_percentile_ties_use_average_rank(tmp_path):
    # m1 = payments / claims = [1, 2, 2, 3] -> ranks 1, 2.5, 2.5, 4 of n = 4
    payments = [
        pay(i, payments=100.0 * m1, claims=100.0, beneficiaries=50.0)
        for i, m1 in ((1, 1), (2, 2), (3, 2), (4, 3))
    ]
    scores = run(tmp_path, payments=payments)
    expected = {1: (1 - 1) / 3, 2: (2.5 - 1) / 3, 3: (2.5 - 1) / 3, 4: (4 - 1) / 3}
    for i, pr in expected.items():
        assert scores[npi(i)]["billing_outlier_percentile"] == approx(round(pr * 100, 2))
    assert [scores[npi(i)]["billing_outlier_percentile"] for i in (1, 2, 3, 4)] == [
        0.0,
        50.0,
        50.0,
        100.0,
    ]


def test_percentile_provider_value_is_mean_of_rounded_yearly_values(tmp_path):
    def member(i: int, year: int, m1: float) -> dict[str, Any]:
        return pay(i, year, payments=100.0 * m1, claims=100.0, beneficiaries=50.0)

    payments = [
        # 2021: m1 [2 (target), 1, 3, 4] -> rank 2 of 4 -> 1/3
        member(1, 2021, 2),
        member(2, 2021, 1),
        member(3, 2021, 3),
        member(4, 2021, 4),
        # 2022: m1 [2 (target), 1, 2, 3] -> average rank 2.5 of 4 -> 1.5/3
        member(1, 2022, 2),
        member(5, 2022, 1),
        member(6, 2022, 2),
        member(7, 2022, 3),
        # 2023: m1 [3 (target), 1, 2] -> rank 3 of 3 -> 1
        member(1, 2023, 3),
        member(8, 2023, 1),
        member(9, 2023, 2),
    ]
    scores = run(tmp_path, payments=payments)
    yearly = [round(1 / 3 * 100, 2), round(1.5 / 3 * 100, 2), round(1.0 * 100, 2)]
    expected = rounded(sum(yearly) / 3, 2)  # (33.33 + 50 + 100) / 3 = 61.11
    assert expected == 61.11
    assert scores[npi(1)]["billing_outlier_percentile"] == approx(expected)


def test_billing_raw_z_uses_decay_weights_by_year_and_logistic_score(tmp_path):
    # Each year the same three eligible peers; the target is not eligible (claims 50),
    # has no 2022 data, and its 2023 row is split over two programs (summed per year).
    peers = [(2, 10000.0), (3, 20000.0), (4, 40000.0)]
    years = (2020, 2021, 2023)
    payments = [
        pay(i, y, payments=p, claims=100.0, beneficiaries=50.0) for y in years for i, p in peers
    ]
    target_payments = {2020: 60000.0, 2021: 45000.0, 2023: 30000.0}
    payments += [
        pay(1, 2020, payments=60000.0, claims=50.0, beneficiaries=25.0),
        pay(1, 2021, payments=45000.0, claims=50.0, beneficiaries=25.0),
        pay(1, 2023, program="Medicare", payments=20000.0, claims=30.0, beneficiaries=15.0),
        pay(1, 2023, program="Medicaid", payments=10000.0, claims=20.0, beneficiaries=10.0),
    ]
    scores = run(tmp_path, payments=payments)

    members = [metrics(p, 100.0, 50.0) for _, p in peers]
    ys = {y: year_score(metrics(target_payments[y], 50.0, 25.0), members) for y in years}
    assert all(0.0 < v < 5.0 for v in ys.values())  # no clipping, all years contribute
    # w_t = 0.7 ** (T - year), T = 2023; 2022 has no data and no weight
    raw_z = (ALPHA**0 * ys[2023] + ALPHA**2 * ys[2021] + ALPHA**3 * ys[2020]) / (
        ALPHA**0 + ALPHA**2 + ALPHA**3
    )
    expected = rounded(100.0 / (1.0 + math.exp(-raw_z / 2.0)), 2)
    row = scores[npi(1)]
    assert row["billing_outlier_score"] == approx(expected)
    assert row["data_window_years"] == [2020, 2021, 2023]
    assert row["peer_count"] == 3  # latest year's (fallback) group


# --------------------------------------------------------------------------- trajectory


def test_single_year_provider_has_zero_trajectory(tmp_path):
    payments = [
        pay(1, 2023, payments=5000.0),
        pay(2, 2022, payments=1000.0),
        pay(2, 2023, payments=3000.0),
        pay(3, 2022, payments=1000.0),
        pay(3, 2023, payments=1000.0),
    ]
    scores = run(tmp_path, payments=payments)
    assert scores[npi(1)]["payment_trajectory_score"] == 0.0
    assert scores[npi(1)]["payment_trajectory_zscore"] == 0.0


def test_trajectory_growth_uses_previous_year_with_data_and_state_groups(tmp_path):
    other_tax = "363L00000X"
    payments = [
        # target: 2019, 2021, 2023 (no 2020 / 2022 rows)
        pay(1, 2019, payments=1000.0),
        pay(1, 2021, payments=3000.0),
        pay(1, 2023, payments=4500.0),
        # 2021 CA peers
        pay(2, 2020, payments=1000.0),
        pay(2, 2021, payments=1500.0),
        pay(3, 2020, payments=0.5),
        pay(3, 2021, payments=1.5),  # g = 1.0 / max(0.5, 1)
        # 2023 CA peers
        pay(4, 2022, payments=2000.0),
        pay(4, 2023, payments=2000.0),
        pay(5, 2022, payments=1000.0),
        pay(5, 2023, payments=1200.0),
        # not in the target's (taxonomy_10, state, year) groups
        pay(6, 2022, payments=100.0, state="NY"),
        pay(6, 2023, payments=10000.0, state="NY"),
        pay(7, 2022, payments=100.0, taxonomy=other_tax),
        pay(7, 2023, payments=500.0, taxonomy=other_tax),
    ]
    scores = run(tmp_path, payments=payments)

    g21 = (3000.0 - 1000.0) / max(1000.0, 1.0)  # 2021 vs 2019 = 2.0
    g23 = (4500.0 - 3000.0) / max(3000.0, 1.0)  # 2023 vs 2021 = 0.5
    group21 = [g21, (1500.0 - 1000.0) / 1000.0, (1.5 - 0.5) / max(0.5, 1.0)]  # [2, 0.5, 1]
    group23 = [g23, (2000.0 - 2000.0) / 2000.0, (1200.0 - 1000.0) / 1000.0]  # [0.5, 0, 0.2]
    # median 1.0, MAD median(1, 0.5, 0) = 0.5
    z21 = max(max(-5.0, min(5.0, (g21 - 1.0) / (1.4826 * 0.5))), 0.0)
    # median 0.2, MAD median(0.3, 0.2, 0) = 0.2
    z23 = max(max(-5.0, min(5.0, (g23 - 0.2) / (1.4826 * 0.2))), 0.0)
    assert statistics.median(group21) == 1.0
    assert statistics.median(group23) == 0.2
    z = (ALPHA**0 * z23 + ALPHA**2 * z21) / (ALPHA**0 + ALPHA**2)
    row = scores[npi(1)]
    assert row["payment_trajectory_zscore"] == approx(rounded(z, 4))
    assert row["payment_trajectory_score"] == approx(rounded(logistic(z), 2))
    # a provider below its group median: z = max(negative, 0) = 0 -> zscore 0, S_t = 50
    assert scores[npi(4)]["payment_trajectory_zscore"] == 0.0
    assert scores[npi(4)]["payment_trajectory_score"] == approx(50.0)


# --------------------------------------------------------------------------- window


def _window_payments() -> list[dict[str, Any]]:
    payments = [pay(1, y, program="Medicare", payments=1000.0) for y in range(2017, 2022)]
    payments += [pay(1, y, program="Medicaid", payments=5000.0) for y in (2022, 2023)]
    payments += [
        pay(2, 2018, payments=1000.0),  # only before the default window
        pay(3, 2150, payments=1000.0),  # quarantined: impossible year, does not set T
        pay(4, 2024, payments=-5.0),  # quarantined: negative amount, does not set T
        pay(5, 2022, payments=1000.0),
        pay(5, 2023, payments=1000.0),
    ]
    return payments


def test_window_is_t_minus_4_to_t_with_t_the_latest_valid_year(tmp_path):
    scores = run(tmp_path, payments=_window_payments())
    assert set(scores) == {npi(1), npi(5)}  # npi(2) has only pre-window rows
    target = scores[npi(1)]
    assert target["data_window_years"] == [2019, 2020, 2021, 2022, 2023]
    # concentration over 2021..2023: Medicare 1000, Medicaid 10000
    share = 10000.0 / 11000.0
    assert target["program_concentration_score"] == approx(rounded(200 * (share - 0.5), 2))
    assert target["top_program"] == "Medicaid"


def test_as_of_year_overrides_t(tmp_path):
    scores = run(tmp_path, payments=_window_payments(), settings={"as_of_year": 2021})
    assert set(scores) == {npi(1), npi(2)}  # npi(5) has only rows after T
    target = scores[npi(1)]
    assert target["data_window_years"] == [2017, 2018, 2019, 2020, 2021]
    assert scores[npi(2)]["data_window_years"] == [2018]
    # concentration over 2019..2021: Medicare only
    assert target["program_concentration_score"] == approx(100.0)
    assert target["top_program"] == "Medicare"


# --------------------------------------------------------------------------- peer attributes


def test_peer_attributes_fall_back_to_payment_rows_then_unknown(tmp_path):
    providers = [
        {"npi": npi(2), "taxonomy_1": "", "state": "WA"},
        {"npi": npi(3), "taxonomy_1": None, "state": None},
        {"npi": npi(4), "taxonomy_1": "207RC0000X-EXTRA", "state": "MA"},
    ]
    payments = [
        # npi(1) is not in providers; rows ordered by program then year:
        # Medicaid 2022 (tax B.., state ''), Medicaid 2023 (tax '', NY),
        # Medicare 2021 (A.., TX), MedicarePartD 2020 (C.., FL)
        pay(1, 2021, program="Medicare", taxonomy="AAAAAAAAAAAA", state="TX"),
        pay(1, 2023, program="Medicaid", taxonomy="", state="NY"),
        pay(1, 2022, program="Medicaid", taxonomy="BBBBBBBBBBBB", state=""),
        pay(1, 2020, program="MedicarePartD", taxonomy="CCCCCCCCCCCC", state="FL"),
        pay(2, 2023, taxonomy="363LF0000X", state="OR"),
        pay(3, 2023, taxonomy="", state=""),
        pay(4, 2023, taxonomy="999900000X", state="CA"),
    ]
    scores = run(tmp_path, payments=payments, providers=providers, auto_providers=False)
    assert (scores[npi(1)]["peer_taxonomy"], scores[npi(1)]["peer_state"]) == ("BBBBBBBBBB", "NY")
    assert (scores[npi(2)]["peer_taxonomy"], scores[npi(2)]["peer_state"]) == ("363LF0000X", "WA")
    assert (scores[npi(3)]["peer_taxonomy"], scores[npi(3)]["peer_state"]) == ("Unknown", "Unknown")
    assert (scores[npi(4)]["peer_taxonomy"], scores[npi(4)]["peer_state"]) == ("207RC0000X", "MA")


def test_peer_attribute_values_are_used_as_stored(tmp_path):
    """'Non-empty' means not null and not ''; the value is not trimmed (SPEC §4)."""
    providers = [
        {"npi": npi(1), "taxonomy_1": " 207Q00000X", "state": "CA "},
        {"npi": npi(2), "taxonomy_1": "   ", "state": " "},
    ]
    payments = [pay(1, 2023), pay(2, 2023, taxonomy="363L00000X", state="WA")]
    scores = run(tmp_path, payments=payments, providers=providers, auto_providers=False)
    assert (scores[npi(1)]["peer_taxonomy"], scores[npi(1)]["peer_state"]) == (" 207Q00000", "CA ")
    assert (scores[npi(2)]["peer_taxonomy"], scores[npi(2)]["peer_state"]) == ("   ", " ")


# --------------------------------------------------------------------------- concentration


def test_program_concentration_thresholds_ties_years_and_flag(tmp_path):
    def split(i: int, **amounts: float) -> list[dict[str, Any]]:
        return [pay(i, 2023, program=p, payments=a) for p, a in amounts.items()]

    payments = [
        *split(1, Medicare=500.0, Medicaid=500.0),  # share 0.5 -> 0, tie -> Medicaid
        *split(2, Medicare=750.0, Medicaid=250.0),  # share 0.75 -> 50
        *split(3, Medicare=1000.0),  # share 1.0 -> 100
        *split(4, Medicaid=800.0, Medicare=200.0),  # share 0.8 -> 60 -> flagged
        *split(5, Medicare=790.0, Medicaid=210.0),  # share 0.79 -> 58 -> not flagged
        # only T-2..T = 2021..2023 count: the 2020 MedicarePartD row is ignored
        pay(6, 2020, program="MedicarePartD", payments=100000.0),
        pay(6, 2021, program="Medicare", payments=600.0),
        pay(6, 2023, program="Medicaid", payments=400.0),
        pay(7, 2019, program="Medicare", payments=1000.0),  # no payments in 2021..2023
    ]
    scores = run(tmp_path, payments=payments)

    def s_p(share: float) -> float:
        return 0.0 if share <= 0.5 else rounded(min(100.0, 200.0 * (share - 0.5)), 2)

    cases = {
        1: (s_p(500 / 1000), "Medicaid"),
        2: (s_p(750 / 1000), "Medicare"),
        3: (s_p(1000 / 1000), "Medicare"),
        4: (s_p(800 / 1000), "Medicaid"),
        5: (s_p(790 / 1000), "Medicare"),
        6: (s_p(600 / 1000), "Medicare"),
        7: (0.0, None),
    }
    assert [c[0] for c in cases.values()] == [0.0, 50.0, 100.0, 60.0, 58.0, 20.0, 0.0]
    for i, (expected, program) in cases.items():
        row = scores[npi(i)]
        assert row["program_concentration_score"] == approx(expected), i
        assert row["top_program"] == program, i
    assert scores[npi(3)]["flags"] == [concentration_flag("Medicare")]
    assert scores[npi(4)]["flags"] == [concentration_flag("Medicaid")]
    assert scores[npi(3)]["flags"] == ["Highly concentrated in a single payer program (Medicare)."]
    for i in (1, 2, 5, 6, 7):
        assert scores[npi(i)]["flags"] == [], i


# --------------------------------------------------------------------------- composite


def test_r_raw_is_weighted_sum_of_components_rounded_to_4(tmp_path):
    providers = [
        {"npi": npi(1), "display_name": "Alpha"},
        {"npi": npi(2), "display_name": ""},
        {"npi": npi(11), "display_name": "Alpha Nursing Rehab"},
        {"npi": npi(12), "display_name": "Alpha Nursing Labs"},
        {"npi": npi(13), "display_name": "Alpha Nursing Therapy"},
    ]
    payments = [
        pay(1, 2022, payments=1000.0),
        pay(1, 2023, payments=3000.0),
        pay(2, 2022, payments=1000.0),
        pay(2, 2023, payments=1000.0),
    ]
    scores = run(
        tmp_path,
        payments=payments,
        providers=providers,
        entities=[{"entity_id": "S1", "name": "Alpha Nursing", "entity_type": "SNF"}],
        exclusions=[
            {"exclusion_id": "X1", "npi": npi(1)},  # the target itself: S_e = 100
            {"exclusion_id": "X2", "npi": npi(11)},  # 1 of 3 chain providers
        ],
    )
    s_b = 50.0  # nobody is eligible (claims 20): z = 0
    s_o = rounded(100 * 1 / 3, 2)  # 33.33
    # growth group 2023: g = [2.0 (target), 0.0] -> median 1, MAD 1
    z_t = max(min((2.0 - 1.0) / (1.4826 * 1.0), 5.0), 0.0)
    s_t = rounded(logistic(z_t), 2)
    s_e = 100.0
    s_p = 100.0  # Medicare only
    expected = rounded(0.30 * s_b + 0.25 * s_o + 0.20 * s_t + 0.15 * s_e + 0.10 * s_p, 4)
    row = scores[npi(1)]
    assert row["billing_outlier_score"] == approx(s_b)
    assert row["ownership_chain_risk"] == approx(s_o)
    assert row["payment_trajectory_score"] == approx(s_t)
    assert row["exclusion_proximity_score"] == approx(s_e)
    assert row["program_concentration_score"] == approx(s_p)
    assert row["r_raw"] == approx(expected)
    assert row["components"] == pytest.approx(
        {
            "billing_outlier_score": s_b,
            "billing_outlier_percentile": 50.0,
            "ownership_chain_risk": s_o,
            "payment_trajectory_score": s_t,
            "payment_trajectory_zscore": rounded(z_t, 4),
            "exclusion_proximity_score": s_e,
            "program_concentration_score": s_p,
        },
        abs=1e-9,
    )
    # the flat peer: S_b 50, S_o 0, S_t 50 (z = max(-0.67, 0) = 0), S_e 0, S_p 100
    assert scores[npi(2)]["r_raw"] == approx(0.30 * 50 + 0.20 * 50 + 0.10 * 100)
    # N = 2 distinct r_raw
    assert scores[npi(1)]["risk_score"] == approx(100.0)
    assert scores[npi(2)]["risk_score"] == approx(0.0)


def _concentration_population(shares: list[float]) -> list[dict[str, Any]]:
    """One single-year provider per share: S_p = 200 (share - 0.5) is the only varying part."""
    rows: list[dict[str, Any]] = []
    for i, share in enumerate(shares, start=1):
        rows.append(pay(i, program="Medicare", payments=round(1000.0 * share, 6)))
        if share < 1.0:
            rows.append(pay(i, program="Medicaid", payments=round(1000.0 * (1 - share), 6)))
    return rows


def test_calibration_five_distinct_r_raw_gives_quartile_scores_and_labels(tmp_path):
    scores = run(tmp_path, payments=_concentration_population([0.5, 0.6, 0.7, 0.8, 0.9]))
    # r_raw = 0.30 * 50 + 0.10 * S_p with S_p = 0, 20, 40, 60, 80
    expected_r_raw = [15.0, 17.0, 19.0, 21.0, 23.0]
    expected_scores = [100 * k / (5 - 1) for k in range(5)]  # 0, 25, 50, 75, 100
    expected_labels = ["Low", "Low", "Moderate", "Elevated", "High"]
    for i in range(5):
        row = scores[npi(i + 1)]
        assert row["r_raw"] == approx(expected_r_raw[i])
        assert row["risk_score"] == approx(expected_scores[i])
        assert row["risk_label"] == expected_labels[i]


def test_calibration_ties_share_a_percent_rank(tmp_path):
    scores = run(tmp_path, payments=_concentration_population([0.5, 0.5, 0.6, 1.0, 1.0]))
    # r_raw = [15, 15, 17, 25, 25]; score = 100 x #strictly smaller / (N - 1)
    expected_r_raw = [15.0, 15.0, 17.0, 25.0, 25.0]
    expected = [100 * 0 / 4, 100 * 0 / 4, 100 * 2 / 4, 100 * 3 / 4, 100 * 3 / 4]
    for i in range(5):
        row = scores[npi(i + 1)]
        assert row["r_raw"] == approx(expected_r_raw[i])
        assert row["risk_score"] == approx(expected[i])
    assert scores[npi(4)]["risk_label"] == "Elevated"  # 75
    assert scores[npi(3)]["risk_label"] == "Moderate"  # 50


def test_calibration_single_provider_scores_zero(tmp_path):
    scores = run(tmp_path, payments=[pay(1, payments=123456.0, claims=500.0)])
    assert scores[npi(1)]["risk_score"] == 0.0
    assert scores[npi(1)]["risk_label"] == "Low"


def test_label_boundaries():
    values = [0.0, 29.99, 30.0, 59.99, 60.0, 79.99, 80.0, 100.0]
    labels = (
        pl.DataFrame({"risk_score": values})
        .with_columns(label_expr(Settings()))
        .get_column("risk_label")
        .to_list()
    )
    assert labels == ["Low", "Low", "Moderate", "Moderate", "Elevated", "Elevated", "High", "High"]


# --------------------------------------------------------------------------- flags


def test_all_flags_exact_texts_and_order(tmp_path):
    providers = [
        {"npi": npi(1), "display_name": "Zeta"},
        {"npi": npi(20), "display_name": "Zeta SNF Staff"},
        {"npi": npi(21), "display_name": "Zeta SNF Nurse"},
        {"npi": npi(30), "display_name": "Omega"},
        {"npi": npi(31), "display_name": "Omega SNF A"},
        {"npi": npi(32), "display_name": "Omega SNF B"},
        {"npi": npi(33), "display_name": "Omega SNF C"},
        {"npi": npi(40), "display_name": "Kappa"},
    ]
    flat = {"payments": 10000.0, "claims": 100.0, "beneficiaries": 50.0}
    payments = [pay(i, y, **flat) for y in (2022, 2023) for i in (2, 3, 4, 5)]
    payments += [
        # target: above the identical peers on m1, m2, m3 in both years, and doubling
        pay(1, 2022, payments=40000.0, claims=200.0, beneficiaries=20.0),
        pay(1, 2023, payments=80000.0, claims=200.0, beneficiaries=20.0),
        # high billing but flat payments: no growth flag
        pay(6, 2022, payments=40000.0, claims=200.0, beneficiaries=20.0),
        pay(6, 2023, payments=40000.0, claims=200.0, beneficiaries=20.0),
        # plural ownership flag, split programs (no concentration flag)
        pay(30, 2023, program="Medicare", payments=500.0),
        pay(30, 2023, program="Medicaid", payments=500.0),
        # owner-level exclusion only (S_e = 80)
        pay(40, 2023, program="Medicare", payments=500.0),
        pay(40, 2023, program="Medicaid", payments=500.0),
    ]
    scores = run(
        tmp_path,
        payments=payments,
        providers=providers,
        entities=[
            {"entity_id": "Z", "name": "Zeta SNF", "entity_type": "SNF"},
            {"entity_id": "O", "name": "Omega SNF", "entity_type": "SNF"},
            {"entity_id": "K", "name": "Kappa SNF", "entity_type": "SNF"},
        ],
        entity_exclusions=[{"entity_id": "K"}],
        exclusions=[
            {"exclusion_id": "E1", "npi": npi(1)},
            {"exclusion_id": "E20", "npi": npi(20)},
            {"exclusion_id": "E31", "npi": npi(31)},
            {"exclusion_id": "E32", "npi": npi(32)},
        ],
    )
    target = scores[npi(1)]
    # each year the group has 6 members, 4 identical -> median = peer value, MAD = 0:
    # the target's z = (5, 5, 5) in both years -> raw_z = 5
    assert target["billing_outlier_score"] == approx(rounded(logistic(5.0), 2))  # 92.41
    # m1 2022: tied top with npi(6) -> avg rank 5.5 of 6 -> 90; 2023: top -> 100
    assert target["billing_outlier_percentile"] == approx(((5.5 - 1) / 5 * 100 + 100.0) / 2)
    # growth 2023: [1.0 (target), 0, 0, 0, 0, 0] -> median 0, MAD 0 -> z = 5
    assert target["payment_trajectory_score"] == approx(rounded(logistic(5.0), 2))
    assert target["ownership_chain_risk"] == approx(50.0)  # 1 of 2 chain providers
    assert target["flags"] == [
        "Billing > 95th percentile vs. state/taxonomy peers (payments per claim).",
        "Rapid growth and high billing intensity vs. peers.",
        "Ownership chain includes 1 excluded provider.",
        "Highly concentrated in a single payer program (Medicare).",
        "Direct or owner-level exclusion on record.",
    ]
    high_flat = scores[npi(6)]
    assert high_flat["billing_outlier_score"] == approx(rounded(logistic(5.0), 2))
    assert high_flat["payment_trajectory_score"] == approx(50.0)  # g = 0 -> z = 0
    assert high_flat["billing_outlier_percentile"] == approx((90.0 + 80.0) / 2)  # < 95
    assert high_flat["flags"] == [concentration_flag("Medicare")]

    plural = scores[npi(30)]
    assert plural["ownership_chain_risk"] == approx(rounded(100 * 2 / 3, 2))
    assert plural["exclusion_proximity_score"] == approx(50.0)  # no flag below 80
    assert plural["flags"] == ["Ownership chain includes 2 excluded providers."]

    owner = scores[npi(40)]
    assert owner["exclusion_proximity_score"] == approx(80.0)
    assert owner["flags"] == [EXCLUSION_FLAG]


def test_billing_flag_is_inclusive_at_95th_percentile(tmp_path):
    # 21 eligible members with m1 = 1..21 (programs split 50/50: no concentration flag)
    payments = []
    for k in range(1, 22):
        payments.append(pay(k, program="Medicare", payments=50.0 * k, claims=50.0))
        payments.append(pay(k, program="Medicaid", payments=50.0 * k, claims=50.0))
    scores = run(tmp_path, payments=payments)
    assert scores[npi(20)]["billing_outlier_percentile"] == approx(round((20 - 1) / 20 * 100, 2))
    assert scores[npi(20)]["flags"] == [BILLING_FLAG]
    assert scores[npi(19)]["billing_outlier_percentile"] == approx(round((19 - 1) / 20 * 100, 2))
    assert scores[npi(19)]["flags"] == []


# --------------------------------------------------------------------------- exclusion status


def test_exclusion_status_comes_from_active_leie_rows_only(tmp_path):
    providers = [
        {"npi": npi(1), "is_excluded": True},  # flag only, no LEIE row
        {"npi": npi(2), "is_excluded": True},
        {"npi": npi(3), "is_excluded": False},
        {"npi": npi(4)},
        {"npi": npi(5)},
    ]
    payments = [
        pay(i, program=p, payments=500.0) for i in range(1, 6) for p in ("Medicare", "Medicaid")
    ]
    exclusions = [
        {"exclusion_id": "L2", "npi": npi(2), "reinstated": True},  # reinstated: not excluded
        {"exclusion_id": "L3", "npi": npi(3), "reinstated": None},  # null means false
        {"exclusion_id": "L4", "npi": npi(4), "reinstated": False},
        {"exclusion_id": "L5a", "npi": npi(5), "reinstated": True},
        {"exclusion_id": "L5b", "npi": npi(5), "reinstated": False},  # one active row suffices
    ]
    scores = run(tmp_path, payments=payments, providers=providers, exclusions=exclusions)
    expected = {1: 0.0, 2: 0.0, 3: 100.0, 4: 100.0, 5: 100.0}
    for i, s_e in expected.items():
        row = scores[npi(i)]
        assert row["exclusion_proximity_score"] == approx(s_e), i
        assert row["actively_excluded"] is (s_e == 100.0), i
        assert row["flags"] == ([EXCLUSION_FLAG] if s_e == 100.0 else []), i
