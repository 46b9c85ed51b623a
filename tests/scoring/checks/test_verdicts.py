"""Issue 24: the verdicts on edge cases no dataset of ours produces (pure functions)."""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from scoring.checks.measures import score_shifts
from scoring.checks.verdicts import full_run_checks, incremental_checks, worst
from scoring.config import Settings

CFG = Settings()


def _measures(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "full",
        "window_end_year": 2023,
        "payment_rows_valid": 1000,
        "rows_by_program": {"Medicare": 600, "Medicaid": 400},
        "rows_by_year": {"2022": 500, "2023": 500},
        "quarantined_payment_rows": 0,
        "quarantine_share": 0.0,
        "providers_scored": 100,
        "components": {"billing_outlier_score": {"mean": 50.0, "p90": 60.0}},
    }
    return {**base, **changes}


SAME = {"added": 0, "removed": 0, "common": 100, "label_churn": 0.0, "movers": 0.0,
        "peer_taxonomy_changed": 0.0}  # fmt: skip


def _verdicts(now: dict[str, Any], shifts: dict[str, Any] = SAME) -> dict[str, str]:
    return {c.name: c.verdict for c in full_run_checks(now, _measures(), shifts, CFG)}


def test_the_same_measures_pass_and_values_share_the_thresholds_unit() -> None:
    checks = full_run_checks(_measures(), _measures(), SAME, CFG)
    assert worst(checks) == "pass"
    for check in checks:
        if check.threshold is not None:
            assert check.value is not None and check.value <= check.threshold, check


def test_a_nan_or_missing_component_blocks() -> None:
    nan = _measures(components={"billing_outlier_score": {"mean": None, "p90": 60.0}})
    assert _verdicts(nan)["billing_outlier_score.mean"] == "block"
    gone = _measures(components={})
    assert _verdicts(gone)["billing_outlier_score.mean"] == "block"
    assert _verdicts(gone)["billing_outlier_score.p90"] == "block"


def test_replaced_npis_block_though_churn_sees_nobody() -> None:
    disjoint = {**SAME, "added": 100, "removed": 100, "common": 0}
    verdicts = _verdicts(_measures(), disjoint)
    assert verdicts["npis_in_common"] == "block"
    assert verdicts["label_churn"] == verdicts["movers"] == "pass"


def test_a_new_window_end_relaxes_ranking_checks_only() -> None:
    moved = {**SAME, "label_churn": 0.5, "movers": 0.5, "peer_taxonomy_changed": 0.5}
    now = _measures(window_end_year=2024, rows_by_year={"2022": 500, "2023": 500, "2024": 400})
    verdicts = _verdicts(now, moved)
    assert verdicts["window_end_year"] == "warn"
    assert verdicts["label_churn"] == verdicts["movers"] == "warn"
    assert verdicts["peer_taxonomy_changed"] == "block"


def test_null_scores_count_as_movers_and_label_changes() -> None:
    reference = pl.DataFrame(
        {
            "npi": ["1", "2"],
            "risk_score": [50.0, 60.0],
            "risk_label": ["Low", "High"],
            "peer_taxonomy": ["A", "B"],
        }
    )
    broken = reference.with_columns(
        pl.lit(None, pl.Float64).alias("risk_score"), pl.lit(None, pl.String).alias("risk_label")
    )
    shifts = score_shifts(broken, reference, 20.0)
    assert shifts["movers"] == 1.0 and shifts["label_churn"] == 1.0
    assert not math.isnan(shifts["movers"])


def test_a_few_quarantined_rows_of_an_incremental_run_only_warn() -> None:
    ref = _measures(quarantine_share=0.004)
    one_bad = _measures(quarantine_share=1 / 31, quarantined_payment_rows=1)
    (quarantine, _movers) = incremental_checks(one_bad, ref, SAME, CFG)
    assert quarantine.verdict == "warn"
    many = _measures(quarantine_share=0.3, quarantined_payment_rows=CFG.check_quarantine_min_rows)
    assert incremental_checks(many, ref, SAME, CFG)[0].verdict == "block"
