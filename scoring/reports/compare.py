"""Two sets of scores side by side (pure polars): per-column agreement, label transitions,
movers, NPIs only on one side. `claidex compare` and the run report's "against the previous
published run" section are built from these."""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from scoring.config import LABELS
from scoring.errors import InputError
from scoring.inputs.npi import npi_to_str

KEY = "npi"
STRUCT_SEP = "."  # components.billing_outlier_score: a struct field compared as its own column


def flattened(scores: pl.DataFrame) -> pl.DataFrame:
    """Struct columns (components) spread into one column per field."""
    structs = [name for name, dtype in scores.schema.items() if isinstance(dtype, pl.Struct)]
    spread = [
        pl.col(name).struct.field(field.name).alias(f"{name}{STRUCT_SEP}{field.name}")
        for name in structs
        for field in scores.schema[name].fields  # type: ignore[union-attr]
    ]
    return scores.with_columns(spread).drop(structs)


def _numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() and dtype != pl.Boolean


def _verdicts(column: str, dtype: pl.DataType, tol: float) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(identical, close, gap) for one shared column. Identical: equal, nulls and NaNs equal to
    their kind; close: identical, or numbers both present within `tol`. A null or NaN against
    a value is never close: it is a difference, whatever the tolerance."""
    a, b = pl.col(f"{column}_a"), pl.col(f"{column}_b")
    same = a.eq_missing(b)
    if not _numeric(dtype):
        return same, same, pl.lit(None, dtype=pl.Float64)
    gap = (a.cast(pl.Float64) - b.cast(pl.Float64)).abs()
    close = same | (gap.is_finite() & (gap <= tol)).fill_null(False)
    return same, close, gap


def _column_exprs(column: str, dtype: pl.DataType, tol: float) -> list[pl.Expr]:
    same, close, gap = _verdicts(column, dtype, tol)
    largest = gap.filter(~same & gap.is_finite()).max() if _numeric(dtype) else gap
    return [
        same.sum().alias(f"{column}|identical"),
        (close & ~same).sum().alias(f"{column}|within_tol"),
        (~close).sum().alias(f"{column}|different"),
        largest.alias(f"{column}|max_abs_diff"),
    ]


def paired(a: pl.DataFrame, b: pl.DataFrame) -> tuple[pl.DataFrame, list[str]]:
    """The NPIs on both sides, each shared column of one type as <col>_a and <col>_b."""
    a, b = flattened(a), flattened(b)
    shared = [c for c in a.columns if c in b.columns and c != KEY and a[c].dtype == b[c].dtype]
    both = a.select(KEY, *shared).join(b.select(KEY, *shared), on=KEY, how="inner", suffix="_b")
    return both.rename({c: f"{c}_a" for c in shared}), shared


def column_agreement(
    both: pl.DataFrame, shared: list[str], schema: dict[str, pl.DataType], tol: float
) -> list[dict[str, Any]]:
    """Per shared column: identical, within tol (numbers only), different, max abs diff."""
    exprs = [e for c in shared for e in _column_exprs(c, schema[c], tol)]
    row = both.select(exprs).row(0, named=True) if exprs else {}
    return [
        {
            "column": c,
            "identical": int(row[f"{c}|identical"]),
            "within_tol": int(row[f"{c}|within_tol"]),
            "different": int(row[f"{c}|different"]),
            "max_abs_diff": row[f"{c}|max_abs_diff"],
        }
        for c in shared
    ]


def differing_rows(
    both: pl.DataFrame, shared: list[str], schema: dict[str, pl.DataType], tol: float, limit: int
) -> list[dict[str, Any]]:
    """The first `limit` NPIs (in NPI order) outside tolerance, with the columns that differ."""
    outside = [~_verdicts(c, schema[c], tol)[1] for c in shared]
    if not outside:
        return []
    flags = both.select(KEY, *[e.alias(c) for e, c in zip(outside, shared, strict=True)])
    hits = flags.filter(pl.any_horizontal(shared)).sort(KEY).head(limit)
    values = both.join(hits.select(KEY), on=KEY, how="semi").sort(KEY)
    rows = []
    for flag_row, value_row in zip(
        hits.iter_rows(named=True), values.iter_rows(named=True), strict=True
    ):  # at most `limit` rows: the report's examples, not the comparison itself
        columns = {
            c: {"a": value_row[f"{c}_a"], "b": value_row[f"{c}_b"]} for c in shared if flag_row[c]
        }
        rows.append({KEY: flag_row[KEY], "columns": columns})
    return rows


def label_transitions(both: pl.DataFrame) -> dict[str, dict[str, int]]:
    """from label (A) -> to label (B) -> NPIs, every label pair present (zeros included)."""
    counts = both.group_by("risk_label_a", "risk_label_b").len()
    lookup = {(f, t): n for f, t, n in counts.iter_rows()}
    return {f: {t: int(lookup.get((f, t), 0)) for t in LABELS} for f in LABELS}


def top_movers(both: pl.DataFrame, n: int) -> list[dict[str, Any]]:
    """The `n` largest |risk_score B - A| (ties: NPI order)."""
    delta = (pl.col("risk_score_b") - pl.col("risk_score_a")).alias("delta")
    movers = (
        both.select(
            KEY,
            pl.col("risk_score_a").alias("before"),
            pl.col("risk_score_b").alias("after"),
            pl.col("risk_label_a").alias("label_before"),
            pl.col("risk_label_b").alias("label_after"),
            delta,
        )
        .filter(pl.col("delta") != 0)
        .sort([pl.col("delta").abs(), pl.col(KEY)], descending=[True, False])
        .head(n)
    )
    return [{**row, "delta": round(row["delta"], 2)} for row in movers.iter_rows(named=True)]


def only_in(a: pl.DataFrame, b: pl.DataFrame, examples: int) -> dict[str, Any]:
    """NPIs of A not in B: how many, and the first few."""
    missing = a.select(KEY).join(b.select(KEY), on=KEY, how="anti").sort(KEY)
    return {"count": missing.height, "examples": missing[KEY].head(examples).to_list()}


def checked_side(scores: pl.DataFrame, name: str) -> pl.DataFrame:
    """A side with its npi as text, each NPI once; else a one-line error naming the side."""
    if KEY not in scores.columns:
        msg = f"{name}: no npi column"
        raise InputError(msg)
    if scores.schema[KEY].is_integer():
        scores = scores.with_columns(npi_to_str(pl.col(KEY)))
    elif scores.schema[KEY] != pl.String:
        msg = f"{name}: npi is {scores.schema[KEY]}, not text or an integer"
        raise InputError(msg)
    nulls = scores[KEY].null_count()
    if nulls:
        msg = f"{name}: {nulls} row(s) without an npi: not one set of scores"
        raise InputError(msg)
    repeated = scores.filter(pl.col(KEY).is_duplicated())[KEY].unique().sort()
    if repeated.len():
        shown = ", ".join(repeated.head(5).to_list())
        msg = (
            f"{name}: {repeated.len()} NPI(s) on more than one row ({shown}): not one set of scores"
        )
        raise InputError(msg)
    return scores


def _unmatched_columns(fa: pl.DataFrame, fb: pl.DataFrame) -> dict[str, list[str]]:
    """Columns of two flattened sides on one side only, or of other types."""
    return {
        "only_in_a": [c for c in fa.columns if c not in fb.columns],
        "only_in_b": [c for c in fb.columns if c not in fa.columns],
        "different_types": [
            f"{c}: {fa[c].dtype} vs {fb[c].dtype}"
            for c in fa.columns
            if c in fb.columns and c != KEY and fa[c].dtype != fb[c].dtype
        ],
    }


def compare_scores(
    a: pl.DataFrame, b: pl.DataFrame, *, tol: float = 0.0, top: int = 10, examples: int = 20
) -> dict[str, Any]:
    """Everything `claidex compare` reports; `within_tolerance` is its exit status."""
    if not math.isfinite(tol) or tol < 0:
        msg = f"--tol {tol}: a tolerance is a finite number >= 0"
        raise InputError(msg)
    if top < 0 or examples < 0:
        msg = f"--top {top}: a count is >= 0"
        raise InputError(msg)
    a, b = flattened(checked_side(a, "A")), flattened(checked_side(b, "B"))
    both, shared = paired(a, b)  # flat already: paired's own flattening changes nothing
    schema = dict(a.schema)
    columns = column_agreement(both, shared, schema, tol)
    result = {
        "tolerance": tol,
        "npis_a": a.height,
        "npis_b": b.height,
        "npis_both": both.height,
        "only_in_a": only_in(a, b, examples),
        "only_in_b": only_in(b, a, examples),
        "columns": columns,
        "unmatched_columns": _unmatched_columns(a, b),
        "differences": differing_rows(both, shared, schema, tol, examples),
        "transitions": label_transitions(both) if "risk_label" in shared else {},
        "movers": top_movers(both, top) if "risk_score" in shared else [],
    }
    result["within_tolerance"] = (
        not result["only_in_a"]["count"]
        and not result["only_in_b"]["count"]
        and all(c["different"] == 0 for c in columns)
        and not any(result["unmatched_columns"].values())
    )
    return result
