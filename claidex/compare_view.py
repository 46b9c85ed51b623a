"""`claidex compare A B`: where the two sides come from, and how the result is shown."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from scoring.config import LABELS, Settings
from scoring.errors import RunStateError
from scoring.runs.object_store import is_url
from scoring.runs.store import SCORES, read_parquet_named, run_store, write_text_atomic

PUBLISHED = "published"


def scores_frame(source: str, cfg: Settings) -> pl.DataFrame:
    """A run directory or s3:// URL, a run id under the run root, or a scores.parquet file."""
    from claidex.local_engine import resolve_run

    candidate = Path(source)
    if not is_url(source) and candidate.is_file():
        return read_parquet_named(candidate)
    if not is_url(source) and (candidate / SCORES).is_file():  # a run directory, even a copy
        return read_parquet_named(candidate / SCORES)
    try:
        paths = resolve_run(source, cfg)
    except RunStateError:
        msg = f"{source!r} is not a scores file, a run directory or a run id under {cfg.run_root}"
        raise RunStateError(msg) from None
    store = run_store(paths)
    if not store.exists(SCORES):
        msg = f"{paths.where()}: no scores.parquet (the run has not merged)"
        raise RunStateError(msg)
    return store.read_frame(SCORES)


def load_side(source: str, cfg: Settings, schema: dict[str, pl.DataType] | None) -> pl.DataFrame:
    if source != PUBLISHED:
        return scores_frame(source, cfg)
    from scoring.db.connection import connect, required_database_url
    from scoring.db.published import read_published

    if schema is None:
        msg = "compare the published table with a run or a scores file, not with itself"
        raise RunStateError(msg)
    with connect(required_database_url()) as conn:
        return read_published(conn, schema)


def load_pair(a: str, b: str, cfg: Settings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Both sides; the published table is typed like the other side's scores.parquet."""
    if a == PUBLISHED:
        right = load_side(b, cfg, None)
        return load_side(a, cfg, dict(right.schema)), right
    left = load_side(a, cfg, None)
    return left, load_side(b, cfg, dict(left.schema))


def _value(v: Any) -> str:
    return "null" if v is None else escape(str(v))


def print_comparison(result: dict[str, Any], names: tuple[str, str], console: Console) -> None:
    a, b = escape(names[0]), escape(names[1])
    verdict = "[green]within tolerance[/]" if result["within_tolerance"] else "[red]DIFFERENT[/]"
    console.print(
        f"A = {a} ({result['npis_a']:,} NPIs), B = {b} ({result['npis_b']:,} NPIs), "
        f"tolerance {result['tolerance']:g}: {verdict}"
    )
    table = Table("column", "identical", "within tol", "different", "max abs diff", title="Columns")
    for c in result["columns"]:
        gap = "" if c["max_abs_diff"] is None else f"{c['max_abs_diff']:.6g}"
        style = "red" if c["different"] else None
        table.add_row(
            escape(c["column"]), f"{c['identical']:,}", f"{c['within_tol']:,}",
            f"{c['different']:,}", gap,
            style=style,
        )  # fmt: skip
    console.print(table)
    for side in ("a", "b"):
        only = result[f"only_in_{side}"]
        if only["count"]:
            shown = escape(", ".join(map(str, only["examples"])))
            console.print(f"[red]only in {side.upper()}: {only['count']:,}[/] ({shown})")
    for kind, columns in result["unmatched_columns"].items():
        if columns:
            listed = escape(", ".join(columns))
            console.print(f"[red]columns {kind.replace('_', ' ')}: {listed}[/]")
    if result["differences"]:
        diffs = Table("npi", "column", "A", "B", title="NPIs outside tolerance (first ones)")
        for row in result["differences"]:
            for column, pair in row["columns"].items():
                diffs.add_row(
                    _value(row["npi"]), escape(column), _value(pair["a"]), _value(pair["b"])
                )
        console.print(diffs)
    if result["transitions"]:
        matrix = Table("A \\ B", *LABELS, title="Label transitions")
        for label in LABELS:
            matrix.add_row(label, *[f"{result['transitions'][label][t]:,}" for t in LABELS])
        console.print(matrix)
    if result["movers"]:
        movers = Table("npi", "A", "B", "delta", "labels", title="Top movers")
        for m in result["movers"]:
            movers.add_row(
                _value(m["npi"]), f"{m['before']:.2f}", f"{m['after']:.2f}", f"{m['delta']:+.2f}",
                _value(f"{m['label_before']} -> {m['label_after']}"),
            )  # fmt: skip
        console.print(movers)


def comparison_html(result: dict[str, Any], names: tuple[str, str]) -> str:
    """The comparison as an HTML section (tables only: it pastes into a sign-off page)."""
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(c['column'])}</td><td>{c['identical']:,}</td><td>{c['within_tol']:,}</td>"
        f"<td>{c['different']:,}</td><td>{'' if c['max_abs_diff'] is None else c['max_abs_diff']}"
        "</td></tr>"
        for c in result["columns"]
    )
    matrix = "".join(
        f"<tr><th>{a}</th>"
        + "".join(f"<td>{result['transitions'][a][b]:,}</td>" for b in LABELS)
        + "</tr>"
        for a in (LABELS if result["transitions"] else ())
    )
    verdict = "within tolerance" if result["within_tolerance"] else "DIFFERENT"
    unmatched = "".join(
        f"<p>columns {esc(kind.replace('_', ' '))}: {esc(', '.join(columns))}</p>"
        for kind, columns in result["unmatched_columns"].items()
        if columns
    )
    differing = "".join(
        f"<tr><td>{esc(str(row['npi']))}</td><td>{esc(', '.join(row['columns']))}</td></tr>"
        for row in result["differences"]
    )
    return (
        f'<section id="compare"><h2>{esc(names[0])} vs {esc(names[1])}: {verdict}</h2>'
        f"<p>only in A: {result['only_in_a']['count']:,}; only in B: "
        f"{result['only_in_b']['count']:,}</p>"
        "<table><tr><th>column</th><th>identical</th><th>within tol</th><th>different</th>"
        f"<th>max abs diff</th></tr>{rows}</table>"
        f"<table><tr><th>A \\ B</th>{''.join(f'<th>{b}</th>' for b in LABELS)}</tr>{matrix}"
        f"</table>{unmatched}<table><tr><th>npi outside tolerance</th><th>columns</th></tr>"
        f"{differing}</table></section>\n"
    )


def write_comparison_html(result: dict[str, Any], names: tuple[str, str], path: Path) -> None:
    body = comparison_html(result, names)
    write_text_atomic(f'<!DOCTYPE html><meta charset="utf-8">{body}', path)
