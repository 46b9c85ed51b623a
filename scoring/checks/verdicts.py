"""The checks themselves: this run's measures against the published run's, each a verdict.

Pure: measures in, checks out. Every limit is a Settings field (check_*)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from scoring.config import Settings

Verdict = Literal["pass", "warn", "block"]
ORDER: dict[str, int] = {"pass": 0, "warn": 1, "block": 2}


@dataclass(frozen=True)
class Check:
    """One check: what was measured, its limit, the published run's value, the verdict."""

    name: str
    value: float | int | None
    threshold: float | None
    reference: float | int | None
    verdict: Verdict
    reason: str = ""

    def record(self) -> dict[str, Any]:
        return asdict(self)


def _over(name: str, value: float, limit: float, ref: Any, why: str) -> Check:
    verdict: Verdict = "block" if value > limit else "pass"
    return Check(name, round(value, 6), limit, ref, verdict, why if verdict == "block" else "")


def _relative(now: float, before: float) -> float:
    return abs(now / before - 1.0) if before else (0.0 if not now else 1.0)


def input_checks(now: dict[str, Any], ref: dict[str, Any], cfg: Settings) -> list[Check]:
    """Programs and years that lost rows, total rows, the quarantined share."""
    checks = []
    total = max(int(ref["payment_rows_valid"]), 1)
    for program, before in sorted(ref["rows_by_program"].items()):
        if before / total < cfg.check_program_min_share:
            continue
        after = int(now["rows_by_program"].get(program, 0))
        loss = 1.0 - after / before
        why = f"program {program} lost {loss:.0%} of its valid rows ({before:,} -> {after:,})"
        check = _over(f"program_rows[{program}]", loss, cfg.check_program_max_loss, before, why)
        checks.append(replace(check, value=after))
    change = _relative(now["payment_rows_valid"], ref["payment_rows_valid"])
    checks.append(
        replace(
            _over(
                "payment_rows",
                change,
                cfg.check_rows_max_change,
                ref["payment_rows_valid"],
                f"valid payment rows moved {change:.0%}",
            ),
            value=now["payment_rows_valid"],
        )
    )
    first_scored = int(now["window_end_year"]) - cfg.window_years + 1
    for year, before in sorted(ref["rows_by_year"].items()):
        if before / total < cfg.check_year_min_share:
            continue
        after = int(now["rows_by_year"].get(year, 0))
        loss = 1.0 - after / before
        why = f"year {year} lost {loss:.0%} of its valid rows ({before:,} -> {after:,})"
        check = replace(
            _over(f"year_rows[{year}]", loss, cfg.check_year_max_loss, before, why), value=after
        )
        if check.verdict == "block" and int(year) < first_scored:  # outside the new window
            check = replace(check, verdict="warn", reason=f"{why}; before the window, not scored")
        checks.append(check)
    rise = now["quarantine_share"] - ref["quarantine_share"]
    checks.append(
        replace(
            _over(
                "quarantine_share",
                rise,
                cfg.check_quarantine_max_rise,
                round(ref["quarantine_share"], 6),
                f"the quarantined share of payment rows rose to {now['quarantine_share']:.1%}",
            ),
            value=round(now["quarantine_share"], 6),
        )
    )
    return checks


def score_checks(
    now: dict[str, Any], ref: dict[str, Any], shifts: dict[str, Any], cfg: Settings
) -> list[Check]:
    """Population, NPIs in and out, label churn, movers, each component's mean and p90."""
    change = _relative(now["providers_scored"], ref["providers_scored"])
    checks = [
        replace(
            _over(
                "providers_scored",
                change,
                cfg.check_population_max_change,
                ref["providers_scored"],
                f"scored providers moved {change:.1%}",
            ),
            value=now["providers_scored"],
        )
    ]
    size = max(int(ref["providers_scored"]), 1)
    for side in ("added", "removed"):
        share = shifts[side] / size
        verdict: Verdict = "warn" if share > cfg.check_npis_changed_warn else "pass"
        why = f"{shifts[side]:,} NPIs {side} ({share:.1%})" if verdict == "warn" else ""
        checks.append(
            Check(f"npis_{side}", shifts[side], cfg.check_npis_changed_warn, None, verdict, why)
        )
    churn, moved = shifts["label_churn"], shifts["movers"]
    checks.append(
        _over("label_churn", churn, cfg.check_label_churn_max, None, f"{churn:.1%} changed label")
    )
    checks.append(
        _over(
            "movers",
            moved,
            cfg.check_movers_max,
            None,
            f"{moved:.1%} moved more than {cfg.check_movers_points:g} points",
        )
    )
    recoded = shifts["peer_taxonomy_changed"]
    checks.append(
        _over(
            "peer_taxonomy_changed",
            recoded,
            cfg.check_peer_taxonomy_max,
            None,
            f"{recoded:.1%} of the providers are in another peer taxonomy (a recode?)",
        )
    )
    for name, stats in now["components"].items():
        before = ref["components"].get(name)
        if before is None:
            continue
        for stat, limit in (
            ("mean", cfg.check_component_mean_max),
            ("p90", cfg.check_component_p90_max),
        ):
            a, b = stats[stat], before[stat]
            if a is None or b is None:
                continue
            shift = abs(a - b)
            why = f"{name} {stat} moved {b:.2f} -> {a:.2f}"
            checks.append(replace(_over(f"{name}.{stat}", shift, limit, b, why), value=a))
    return checks


def full_run_checks(
    now: dict[str, Any],
    ref: dict[str, Any] | None,
    shifts: dict[str, Any] | None,
    cfg: Settings,
) -> list[Check]:
    """Every check of a full run. No reference (an empty table): one passing note. A new
    window end is expected change: a warning, and the score checks it moves warn, not block
    (the input checks still block)."""
    if ref is None or shifts is None:
        return [Check("reference", None, None, None, "pass", "first publish: the table is empty")]
    checks = input_checks(now, ref, cfg)
    scored = score_checks(now, ref, shifts, cfg)
    if now["window_end_year"] != ref["window_end_year"]:
        moved = f"window end {ref['window_end_year']} -> {now['window_end_year']}"
        checks.append(
            Check(
                "window_end_year",
                now["window_end_year"],
                None,
                ref["window_end_year"],
                "warn",
                moved,
            )
        )
        scored = [
            replace(c, verdict="warn", reason=f"{c.reason} (expected: {moved})")
            if c.verdict == "block"
            else c
            for c in scored
        ]
    return checks + scored


def incremental_checks(
    now: dict[str, Any], ref: dict[str, Any], shifts: dict[str, Any], cfg: Settings
) -> list[Check]:
    """What applies to a few rescored NPIs: their rows' quarantined share (blocks), and how
    many of them moved (a warning: rescoring changed NPIs is what moves them)."""
    rise = now["quarantine_share"] - ref["quarantine_share"]
    quarantine = replace(
        _over(
            "quarantine_share",
            rise,
            cfg.check_quarantine_max_rise,
            round(ref["quarantine_share"], 6),
            f"the quarantined share of payment rows rose to {now['quarantine_share']:.1%}",
        ),
        value=round(now["quarantine_share"], 6),
    )
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
    return [quarantine, movers]


def worst(checks: list[Check]) -> Verdict:
    return max((c.verdict for c in checks), key=ORDER.__getitem__, default="pass")
