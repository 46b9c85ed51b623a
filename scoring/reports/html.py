"""report.html: the run report as one self-contained page (inline SVG charts drawn by
matplotlib, inline CSS, no script, no network), rendered from report.json alone.

Every number on the page carries `data-key`, the JSON path of its value in report.json,
so a test can check the page against the file it was made from."""

from __future__ import annotations

import html
import io
import itertools
import json
import math
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: containers and workers render too (before pyplot, if any)
from matplotlib.figure import Figure

from scoring.config import LABELS
from scoring.reports.html_cells import _fmt, _section, _table, _text, checks_section
from scoring.runs.store import REPORT_HTML, RunPaths, run_store

matplotlib.rcParams.update(
    # same bytes each time; labels are data (a '$' in a program name is text, not math)
    {"svg.hashsalt": "claidex", "svg.fonttype": "none", "font.size": 9, "text.parse_math": False}
)
LABEL_COLOURS = {"High": "#b2182b", "Elevated": "#ef8a62", "Moderate": "#fddbc7", "Low": "#67a9cf"}
STAGE_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02")
BATCH_COLOUR, FAILED_COLOUR = "#377eb8", "#e41a1c"
GANTT_LANE_LABELS = 40  # more processes than this: lanes are drawn unlabelled
CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:20px}h2{font-size:16px;border-bottom:1px solid #ccc;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:12px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
section{margin-bottom:28px}.chart svg{max-width:100%;height:auto}
.pair{display:flex;gap:24px;align-items:flex-start;flex-wrap:wrap}
.note{color:#666;font-size:12px}
"""


def _svg(fig: Figure, *, tight: bool = True) -> str:
    """The figure as inline SVG; `tight` crops to what is drawn (one more layout pass: the
    components grid sets its margins itself instead)."""
    buffer = io.StringIO()
    crop = "tight" if tight else None
    fig.savefig(buffer, format="svg", bbox_inches=crop, metadata={"Date": None})
    text = buffer.getvalue()
    return f'<div class="chart">{text[text.index("<svg") :]}</div>'


def _num(path: list[Any], value: Any) -> str:
    """A table cell holding report.json's value at `path`."""
    key = html.escape(json.dumps(path), quote=True)
    return f'<td class="n" data-key="{key}">{_fmt(value)}</td>'


def _pair(*parts: str) -> str:
    """A chart and its table side by side (they wrap on a narrow screen)."""
    return f'<div class="pair">{"".join(parts)}</div>'


def _header(report: dict[str, Any]) -> str:
    head = report.get("header", {})
    rows = [[_text(k), _text(v)] for k, v in head.items() if k != "window" and v is not None]
    window = report["window"]
    rows.append([_text("window"), _text(f"{window[0]}-{window[1]}")])
    rows.append([_text("providers scored"), _num(["rows_scored"], report["rows_scored"])])
    rows.append([_text("batches"), _num(["batches"], report["batches"])])
    return _section("header", "Run", _table(["field", "value"], rows))


def _labels(report: dict[str, Any]) -> str:
    counts = [report["labels"].get(label, 0) for label in LABELS]
    fig = Figure(figsize=(5, 2.4))
    ax = fig.add_subplot()
    ax.bar(LABELS, counts, color=[LABEL_COLOURS[label] for label in LABELS])
    ax.set_ylabel("providers")
    rows = [
        [_text(label), _num(["labels", label], report["labels"].get(label, 0))] for label in LABELS
    ]
    return _section(
        "labels", "Label mix", _pair(_svg(fig), _table(["risk_label", "providers"], rows))
    )


def _labelled_barh(ax: Any, labels: list[str], values: list[Any], colour: str) -> None:
    """One bar per row, even when two shortened labels read the same."""
    ax.barh(range(len(values)), values, color=colour)
    ax.set_yticks(range(len(values)), labels)
    ax.invert_yaxis()


def _bars(ax: Any, histogram: dict[str, list[Any]], colour: str) -> None:
    edges, counts = histogram["edges"], histogram["counts"]
    widths = [b - a for a, b in itertools.pairwise(edges)]
    ax.bar(edges[:-1], counts, width=widths, align="edge", color=colour, edgecolor="white")


def _risk_score(report: dict[str, Any]) -> str:
    fig = Figure(figsize=(7, 2.6))
    ax = fig.add_subplot()
    _bars(ax, report["risk_score_histogram"], "#555")
    ax.set_xlabel("risk_score")
    ax.set_ylabel("providers")
    hist = report["risk_score_histogram"]
    rows = [
        [_text(f"{a:g}-{b:g}"), _num(["risk_score_histogram", "counts", i], n)]
        for i, (a, b, n) in enumerate(
            zip(hist["edges"], hist["edges"][1:], hist["counts"], strict=False)
        )
    ]
    return _section(
        "risk-score",
        "risk_score histogram",
        _pair(_svg(fig), _table(["risk_score", "providers"], rows)),
    )


def _compact(n: int) -> str:
    """1, 10, 100, 1k, ..., 10M: tick texts that fit the grid's fixed margin at any scale."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n // size}{suffix}"
    return str(n)


def _components(report: dict[str, Any]) -> str:
    components = report["components"]  # the registered components: a histogram each
    rows = math.ceil((len(components) + 1) / 3)  # and the shares: 2 rows for SPEC's five
    fig = Figure(figsize=(11, 2.1 * rows))
    axes = fig.subplots(rows, 3).flatten()
    fig.subplots_adjust(left=0.06, right=0.99, top=0.93, bottom=0.08, wspace=0.3, hspace=0.45)
    for ax in axes[len(components) + 1 :]:
        ax.set_visible(False)
    for ax, (name, summary) in zip(axes, components.items(), strict=False):
        # heights log10(1 + n) on a linear axis, ticks labelled in providers: a log axis
        # costs most of the page's drawing time (its tick machinery), this looks the same
        hist = summary["histogram"]
        logged = {**hist, "counts": [math.log10(1 + n) for n in hist["counts"]]}
        _bars(ax, logged, "#4c72b0")
        decades = range(math.ceil(max(logged["counts"], default=0.0)) + 1)
        ax.set_yticks([math.log10(1 + 10**k) if k else 0.0 for k in decades],
                      [_compact(10**k) if k else "0" for k in decades])  # fmt: skip
        ax.set_title(name, fontsize=9)
    share = axes[len(components)]
    short = [name.split("_")[0] for name in components]  # billing, ownership, ...
    share.bar(range(len(short)), [c["share_of_composite"] for c in components.values()])
    share.set_xticks(range(len(short)), short)
    share.tick_params(axis="x", labelsize=7, rotation=30 if len(short) > 5 else 0)
    share.set_title("share of the composite r_raw", fontsize=9)
    fields = ("weight", "mean", "p50", "p90", "p99", "max", "share_of_composite")
    rows = [
        [_text(name), *[_num(["components", name, f], summary[f]) for f in fields]]
        for name, summary in components.items()
    ]
    return _section(
        "components", "Components", _svg(fig, tight=False), _table(["component", *fields], rows)
    )


def _flags(report: dict[str, Any]) -> str:
    flags = list(report["top_flags"].items())[:10]
    if not flags:
        return _section("flags", "Flags", '<p class="note">no provider carries a flag</p>')
    fig = Figure(figsize=(8, 0.5 + 0.32 * len(flags)))
    ax = fig.add_subplot()
    _labelled_barh(ax, [text[:60] for text, _ in flags], [n for _, n in flags], "#8172b2")
    ax.set_xlabel("providers")
    rows = [[_text(text), _num(["top_flags", text], n)] for text, n in flags]
    return _section("flags", "Top flags", _pair(_svg(fig), _table(["flag", "providers"], rows)))


def _quarantine(report: dict[str, Any]) -> str:
    quarantined = report["quarantined"]
    groups = quarantined.get("by_file", [])
    cell = _num(["quarantined", "total"], quarantined["total"])
    total = f"<table><tr><td>rows quarantined</td>{cell}</tr></table>"
    if not groups:
        return _section(
            "quarantine", "Quarantine", total, '<p class="note">nothing quarantined</p>'
        )
    fig = Figure(figsize=(8, 0.5 + 0.32 * len(groups)))
    ax = fig.add_subplot()
    labels = [f"{g['source']}: {g['reason']}"[:70] for g in groups]
    _labelled_barh(ax, labels, [g["rows"] for g in groups], "#c44e52")
    ax.set_xlabel("rows")
    rows = []
    for i, group in enumerate(groups):
        examples = "<br>".join(
            html.escape(f"row {e['source_row']}, npi {e['npi']}: {e['record']}")
            for e in group["examples"]
        )
        rows.append(
            [
                _text(group["source"]),
                _text(group["reason"]),
                _num(["quarantined", "by_file", i, "rows"], group["rows"]),
                f"<td>{examples}</td>",
            ]
        )
    return _section(
        "quarantine",
        "Quarantine",
        total,
        _svg(fig),
        _table(["file", "reason", "rows", "examples"], rows),
    )


def _gantt(ax: Any, tasks: list[dict[str, Any]]) -> None:
    lanes: list[str] = []
    for task in tasks:  # ordered by start: lanes appear top to bottom as they begin work
        if task["lane"] not in lanes:
            lanes.append(task["lane"])
    stages = sorted({t["stage"] for t in tasks if t["kind"] == "stage"})
    colour = {s: STAGE_COLOURS[i % len(STAGE_COLOURS)] for i, s in enumerate(stages)}
    for row, lane in enumerate(lanes):
        mine = [t for t in tasks if t["lane"] == lane]
        spans = [(t["start"], max(t["end"] - t["start"], 1e-3)) for t in mine]
        colours = [
            FAILED_COLOUR
            if t["outcome"] != "done"
            else colour.get(t.get("stage", ""), BATCH_COLOUR)
            for t in mine
        ]
        ax.broken_barh(spans, (row - 0.4, 0.8), facecolors=colours)
    ax.set_yticks(
        range(len(lanes)), lanes if len(lanes) <= GANTT_LANE_LABELS else [""] * len(lanes)
    )
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the start of prepare")
    handles = [matplotlib.patches.Patch(color=colour[s], label=s) for s in stages]
    handles.append(matplotlib.patches.Patch(color=BATCH_COLOUR, label="batch"))
    ax.legend(handles=handles, fontsize=7, loc="upper right")


def _time(report: dict[str, Any]) -> str:
    timings = report["timings_seconds"]
    line = report.get("timeline", {})
    per_stage = line.get("per_stage", {})
    fig = Figure(figsize=(6, 2.2))
    ax = fig.add_subplot()
    steps = list(timings) + [f"{s} (task-s)" for s in per_stage]
    ax.barh(steps, list(timings.values()) + list(per_stage.values()), color="#64b5cd")
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    rows = [[_text(k), _num(["timings_seconds", k], v)] for k, v in timings.items()]
    rows += [
        [_text(f"{k}: task-seconds"), _num(["timeline", "per_stage", k], v)]
        for k, v in per_stage.items()
    ]
    use_rows = []
    for phase in ("stages", "batches"):
        use = line.get(phase, {})
        use_rows.append(
            [
                _text(phase),
                *[
                    _num(["timeline", phase, f], use.get(f))
                    for f in ("tasks", "processes", "span_seconds", "busy_seconds", "utilisation")
                ],
            ]
        )
    parts = [_pair(_svg(fig), _table(["step", "seconds"], rows))]
    tasks = line.get("tasks", [])
    if tasks:
        lanes = len({t["lane"] for t in tasks})
        gantt = Figure(figsize=(10, min(12.0, 1.2 + 0.28 * lanes)))
        _gantt(gantt.add_subplot(), tasks)
        parts += ['<h3 style="font-size:13px">Tasks by process</h3>', _svg(gantt)]
    parts.append(
        _table(["phase", "tasks", "processes", "span s", "busy s", "utilisation"], use_rows)
    )
    return _section("time", "Time", *parts)


def _planted(report: dict[str, Any]) -> str:
    planted = report.get("planted_capture") or {}
    if "error" in planted:
        return _section(
            "planted", "Planted anomalies", f'<p class="note">{html.escape(planted["error"])}</p>'
        )
    if not planted:
        return _section(
            "planted",
            "Planted anomalies",
            '<p class="note">not generated data: nothing planted</p>',
        )
    kinds = list(planted)
    fig = Figure(figsize=(6, 0.6 + 0.35 * len(kinds)))
    ax = fig.add_subplot()
    ax.barh(kinds, [planted[k]["share_elevated_or_high"] for k in kinds], color="#55a868")
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share scored Elevated or High")
    fields = ("planted", "scored", "elevated_or_high", "share_elevated_or_high")
    rows = [
        [_text(k), *[_num(["planted_capture", k, f], planted[k][f]) for f in fields]] for k in kinds
    ]
    return _section(
        "planted", "Planted anomalies", _pair(_svg(fig), _table(["kind", *fields], rows))
    )


def _previous(report: dict[str, Any]) -> str:
    previous = report.get("previous_run")
    if not previous:
        return _section(
            "previous",
            "Against the previous published run",
            '<p class="note">no earlier published full run under this run root</p>',
        )
    if "error" in previous:
        note = f"previous published run {previous['run_id']}: cannot read its scores: "
        return _section(
            "previous",
            "Against the previous published run",
            f'<p class="note">{html.escape(note + previous["error"])}</p>',
        )
    matrix = previous["transitions"]
    fig = Figure(figsize=(4.6, 3.6))
    ax = fig.add_subplot()
    grid = [[matrix[a][b] for b in LABELS] for a in LABELS]
    ax.imshow(grid, cmap="Blues")
    for i, row in enumerate(grid):
        for j, n in enumerate(row):
            ax.text(j, i, f"{n:,}", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(LABELS)), LABELS)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel(f"this run ({report['run_id']})")
    ax.set_ylabel(f"previous ({previous['run_id']})")
    transitions = [
        [_text(a), *[_num(["previous_run", "transitions", a, b], matrix[a][b]) for b in LABELS]]
        for a in LABELS
    ]
    movers = [
        [
            _text(m["npi"]),
            _num(["previous_run", "movers", i, "before"], m["before"]),
            _num(["previous_run", "movers", i, "after"], m["after"]),
            _num(["previous_run", "movers", i, "delta"], m["delta"]),
            _text(f"{m['label_before']} -> {m['label_after']}"),
        ]
        for i, m in enumerate(previous["movers"])
    ]
    summary = [
        [_text("previous run"), _text(previous["run_id"])],
        [_text("NPIs in both"), _num(["previous_run", "npis_both"], previous["npis_both"])],
        [
            _text("label changes"),
            _num(["previous_run", "label_changes"], previous["label_changes"]),
        ],
        [_text("NPIs added"), _num(["previous_run", "added", "count"], previous["added"]["count"])],
        [
            _text("NPIs removed"),
            _num(["previous_run", "removed", "count"], previous["removed"]["count"]),
        ],
    ]
    return _section(
        "previous",
        "Against the previous published run",
        _pair(
            _table(["", ""], summary),
            _svg(fig),
            _table(["from \\ to", *LABELS], transitions),
        ),
        '<h3 style="font-size:13px">Largest movers</h3>',
        _table(["npi", "before", "after", "delta", "label"], movers),
    )


SECTIONS = (
    checks_section,
    _header,
    _labels,
    _risk_score,
    _components,
    _flags,
    _quarantine,
    _time,
    _planted,
    _previous,
)
SECTION_IDS = (
    "checks",
    "header",
    "labels",
    "risk-score",
    "components",
    "flags",
    "quarantine",
    "time",
    "planted",
    "previous",
)


def render_report(report: dict[str, Any]) -> str:
    body = "".join(section(report) for section in SECTIONS)
    title = html.escape(f"Claidex run {report['run_id']}")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head><body><h1>{title}</h1>{body}</body></html>\n"
    )


def write_report_html(report: dict[str, Any], paths: RunPaths) -> None:
    run_store(paths).write_text(REPORT_HTML, render_report(report))
