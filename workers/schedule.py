"""Celery beat: weekly full recompute and daily refresh of changed NPIs (env-overridable)."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from scoring.config import Settings


def parse_schedule(text: str) -> Any:
    """'0 3 * * 0' (crontab: minute hour day-of-month month day-of-week) or '30' (seconds)."""
    text = text.strip()
    if text.replace(".", "", 1).isdigit():
        return float(text)
    fields = text.split()
    if len(fields) != 5:
        msg = f"schedule {text!r}: expected 5 crontab fields or a number of seconds"
        raise ValueError(msg)
    minute, hour, day_of_month, month, day_of_week = fields
    return crontab(
        minute=minute,
        hour=hour,
        day_of_month=day_of_month,
        month_of_year=month,
        day_of_week=day_of_week,
    )


def beat_schedule(cfg: Settings) -> dict[str, dict[str, Any]]:
    return {
        "weekly-full-recompute": {
            "task": "claidex.scheduled_full_run",
            "schedule": parse_schedule(cfg.full_schedule),
            "options": {"queue": "runs"},
        },
        "daily-refresh-changed-npis": {
            "task": "claidex.refresh_changed",
            "schedule": parse_schedule(cfg.refresh_schedule),
            # A whole-source scan: on the runs queue, so ad-hoc enqueues never wait for it.
            "options": {"queue": "runs"},
        },
    }
