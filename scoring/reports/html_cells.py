"""The page's cells and sections (shared by report.html's sections), and the checks
section, which comes first on the page."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return html.escape(str(value))
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float) and not math.isfinite(value):
        return html.escape(str(value))
    if isinstance(value, float):
        return f"{value:,.4f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:,.1f}"
    return html.escape(str(value))


def _table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(f"<tr>{''.join(cells)}</tr>" for cells in rows)
    return f"<table><tr>{header}</tr>{body}</table>"


def _text(value: Any) -> str:
    return f"<td>{html.escape(str(value))}</td>"


def _section(ident: str, title: str, *parts: str) -> str:
    return f'<section id="{ident}"><h2>{html.escape(title)}</h2>{"".join(parts)}</section>'


def checks_section(report: dict[str, Any]) -> str:
    """The checks before publish, first on the page: blocking ones first, then warnings."""
    checks = report.get("checks")
    if not checks:
        return _section("checks", "Checks before publish", "<p>not checked (not published)</p>")
    verdict = checks["verdict"].upper()
    against = f" against {checks['reference_run']}" if checks.get("reference_run") else ""
    note = f" ({checks['note']})" if checks.get("note") else ""
    order = {"block": 0, "warn": 1, "pass": 2}
    rows = [
        [
            _text(c["verdict"]),
            _text(c["name"]),
            f"<td>{_fmt(c['value'])}</td>",
            f"<td>{_fmt(c['threshold'])}</td>",
            f"<td>{_fmt(c['reference'])}</td>",
            _text(c["reason"]),
        ]
        for c in sorted(checks["checks"], key=lambda c: order[c["verdict"]])
    ]
    table = _table(["verdict", "check", "value", "limit", "published run", "why"], rows)
    return _section(
        "checks",
        "Checks before publish",
        f"<p><b>{html.escape(verdict)}</b>{html.escape(against + note)}</p>",
        table,
    )
