"""The checks themselves: this run's measures against the published run's, each a verdict.

Pure: measures in, checks out. Every limit is a Settings field (check_*). A check's value
and its threshold are in the same unit (a share, or points); `reference` is the published
run's count or statistic, the reason says what moved from what to what."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from scoring.config import Settings

Verdict = Literal["pass", "warn", "block"]
ORDER: dict[str, int] = {"pass": 0, "warn": 1, "block": 2}
# what a new window end explains: who is scored and how they rank (not the inputs, not a
# taxonomy recode)
MOVED_BY_A_NEW_WINDOW = ("providers_scored", "npis_in_common", "label_churn", "movers")


@dataclass(frozen=True)
class Check:
    """One check: what was measured, its limit, the published run's value, the verdict."""

    name: str
    value: float | None
    threshold: float | None
    reference: float | int | None
    verdict: Verdict
    reason: str = ""

    def record(self) -> dict[str, Any]:
        return asdict(self)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _over(name: str, value: float | None, limit: float, ref: Any, why: str) -> Check:
    """Blocks over the limit; a value that is not a finite number blocks too (a NaN never
    compares greater than anything: it must not pass for that)."""
    if not _finite(value):
        return Check(name, None, limit, ref, "block", f"{why}: not a number ({value})")
    assert value is not None
    verdict: Verdict = "block" if value > limit else "pass"
    return Check(name, round(value, 6), limit, ref, verdict, why if verdict == "block" else "")


def _change(now: float, before: float) -> float:
    return abs(now / before - 1.0) if before else (0.0 if not now else 1.0)


def _lost_rows(
    kind: str, now: dict[str, int], ref: dict[str, int], total: int, min_share: float, limit: float
) -> list[tuple[str, Check]]:
    """(key, `kind_rows[key]`) for each key (program, year) that held at least `min_share`
    of the published run's `total` valid rows: the share of them it lost."""
    checks = []
    for key, before in sorted(ref.items()):
        if before / total < min_share:
            continue
        after = int(now.get(key, 0))
        loss = 1.0 - after / before
        why = f"{kind} {key} lost {loss:.0%} of its valid rows ({before:,} -> {after:,})"
        checks.append((key, _over(f"{kind}_rows[{key}]", loss, limit, before, why)))
    return checks


def input_checks(now: dict[str, Any], ref: dict[str, Any], cfg: Settings) -> list[Check]:
    """Programs and years that lost rows, total rows, the quarantined share."""
    total = max(int(ref["payment_rows_valid"]), 1)
    programs = _lost_rows(
        "program",
        now["rows_by_program"],
        ref["rows_by_program"],
        total,
        cfg.check_program_min_share,
        cfg.check_program_max_loss,
    )
    checks = [check for _program, check in programs]
    before, after = int(ref["payment_rows_valid"]), int(now["payment_rows_valid"])
    change = _change(after, before)
    why = f"valid payment rows moved {change:.0%} ({before:,} -> {after:,})"
    checks.append(_over("payment_rows", change, cfg.check_rows_max_change, before, why))
    first_scored = int(now["window_end_year"]) - cfg.window_years + 1
    years = _lost_rows(
        "year",
        now["rows_by_year"],
        ref["rows_by_year"],
        total,
        cfg.check_year_min_share,
        cfg.check_year_max_loss,
    )
    for year, check in years:  # a year before the new window is no longer scored: a warning
        if check.verdict == "block" and int(year) < first_scored:
            check = replace(
                check, verdict="warn", reason=f"{check.reason}; before the window, not scored"
            )
        checks.append(check)
    checks.append(quarantine_check(now, ref, cfg))
    return checks


def quarantine_check(now: dict[str, Any], ref: dict[str, Any], cfg: Settings) -> Check:
    """The rise of the quarantined share of payment rows, in share points; fewer than
    `check_quarantine_min_rows` quarantined rows never block (a few NPIs' one bad row)."""
    rise = now["quarantine_share"] - ref["quarantine_share"]
    why = (
        f"the quarantined share of payment rows rose to {now['quarantine_share']:.1%} "
        f"({now['quarantined_payment_rows']:,} rows)"
    )
    check = _over(
        "quarantine_share", rise, cfg.check_quarantine_max_rise, ref["quarantine_share"], why
    )
    if check.verdict == "block" and now["quarantined_payment_rows"] < cfg.check_quarantine_min_rows:
        check = replace(check, verdict="warn", reason=f"{why}: too few rows to block")
    return check


def score_checks(
    now: dict[str, Any], ref: dict[str, Any], shifts: dict[str, Any], cfg: Settings
) -> list[Check]:
    """Population, NPIs in and out, label churn, movers, peer taxonomy, each component's
    mean and p90."""
    before, after = int(ref["providers_scored"]), int(now["providers_scored"])
    change = _change(after, before)
    why = f"scored providers moved {change:.1%} ({before:,} -> {after:,})"
    checks = [_over("providers_scored", change, cfg.check_population_max_change, before, why)]
    size = max(before, 1)
    for side in ("added", "removed"):
        share = shifts[side] / size
        verdict: Verdict = "warn" if share > cfg.check_npis_changed_warn else "pass"
        why = f"{shifts[side]:,} NPIs {side} ({share:.1%})" if verdict == "warn" else ""
        checks.append(
            Check(f"npis_{side}", round(share, 6), cfg.check_npis_changed_warn, None, verdict, why)
        )
    lost = 1.0 - shifts["common"] / size  # churn and movers only see the NPIs in both runs
    why = f"only {shifts['common']:,} of the published run's {before:,} NPIs are scored again"
    checks.append(_over("npis_in_common", lost, cfg.check_population_max_change, before, why))
    points = f"moved more than {cfg.check_movers_points:g} points (or lost their score)"
    for name, limit, what in (
        ("label_churn", cfg.check_label_churn_max, "changed label"),
        ("movers", cfg.check_movers_max, points),
        (
            "peer_taxonomy_changed",
            cfg.check_peer_taxonomy_max,
            "are in another peer taxonomy (a recode?)",
        ),
    ):
        checks.append(_over(name, shifts[name], limit, None, f"{shifts[name]:.1%} {what}"))
    for name, stats in ref["components"].items():
        current = now["components"].get(name)
        for stat, limit in (
            ("mean", cfg.check_component_mean_max),
            ("p90", cfg.check_component_p90_max),
        ):
            b = stats.get(stat)
            if not _finite(b):  # the published run had none: nothing to compare with
                continue
            a = None if current is None else current.get(stat)
            shift = abs(a - b) if _finite(a) else None
            why = f"{name} {stat} moved {b:.2f} -> {a if a is None else round(a, 2)}"
            checks.append(_over(f"{name}.{stat}", shift, limit, b, why))
    return checks


def full_run_checks(
    now: dict[str, Any],
    ref: dict[str, Any],
    shifts: dict[str, Any],
    cfg: Settings,
) -> list[Check]:
    """Every check of a full run against the run on the table. A new window end is expected
    change: a warning, and the checks it explains (MOVED_BY_A_NEW_WINDOW) warn instead of
    blocking; the inputs, the peer taxonomy and the components still block."""
    checks = input_checks(now, ref, cfg)
    scored = score_checks(now, ref, shifts, cfg)
    if now["window_end_year"] != ref["window_end_year"]:
        moved = f"window end {ref['window_end_year']} -> {now['window_end_year']}"
        checks.append(Check("window_end_year", None, None, ref["window_end_year"], "warn", moved))
        scored = [
            replace(c, verdict="warn", reason=f"{c.reason} (expected: {moved})")
            if c.verdict == "block" and c.name in MOVED_BY_A_NEW_WINDOW
            else c
            for c in scored
        ]
    return checks + scored


def incremental_checks(
    now: dict[str, Any], ref: dict[str, Any], shifts: dict[str, Any], cfg: Settings
) -> list[Check]:
    """What applies to a few rescored NPIs: their rows' quarantined share (blocks, from
    `check_quarantine_min_rows` rows on), and how many of them moved (a warning: rescoring
    changed NPIs is what moves them)."""
    moved = shifts["movers"]
    verdict: Verdict = "warn" if moved > cfg.check_movers_max else "pass"
    why = f"{moved:.1%} of the rescored NPIs moved more than {cfg.check_movers_points:g} points"
    movers = Check(
        "movers",
        round(moved, 6),
        cfg.check_movers_max,
        None,
        verdict,
        why if verdict == "warn" else "",
    )
    return [quarantine_check(now, ref, cfg), movers]


def reference_check(verdict: Verdict, reason: str) -> Check:
    """The comparison itself: a first publish (pass, a note) or no reference to compare with
    (blocks: accept to publish unchecked)."""
    return Check("reference", None, None, None, verdict, reason)


def worst(checks: list[Check]) -> Verdict:
    return max((c.verdict for c in checks), key=ORDER.__getitem__, default="pass")
