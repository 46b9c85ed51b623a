"""Celery beat: weekly full recompute and daily refresh of changed NPIs (env-overridable)."""

from __future__ import annotations

from typing import Any

from celery.schedules import crontab

from scoring.config import Settings


def cron_day_of_week(field: str) -> str:
    """Cron's 7 is Sunday as well as 0 (crontab(5)); Celery accepts only 0-6."""
    items = []
    for item in field.split(","):
        step = ""
        if "/" in item:
            item, step = item.split("/", 1)
            step = "/" + step
        if item == "7":
            item = "0"
        elif "-" in item and item.endswith("-7") and not step:
            start = item.split("-", 1)[0]
            item = f"{start}-6,0" if start != "7" else "0"
        items.append(item + step)
    return ",".join(items)


def parse_schedule(text: str) -> Any:
    """'0 3 * * 0' (crontab: minute hour day-of-month month day-of-week) or '30' (seconds)."""
    text = text.strip()
    if text.replace(".", "", 1).isdigit():
        seconds = float(text)
        if seconds <= 0:  # Celery would run it on every beat tick
            msg = f"schedule {text!r}: an interval must be more than 0 seconds"
            raise ValueError(msg)
        return seconds
    fields = text.split()
    if len(fields) != 5:
        msg = f"schedule {text!r}: expected 5 crontab fields or a number of seconds"
        raise ValueError(msg)
    minute, hour, day_of_month, month, day_of_week = fields
    try:
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month,
            day_of_week=cron_day_of_week(day_of_week),
        )
    except ValueError as exc:
        msg = f"schedule {text!r}: {exc}"
        raise ValueError(msg) from None


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
        "watchdog": {  # finds stuck runs and resumes them (workers.watchdog)
            "task": "claidex.watchdog",
            "schedule": cfg.watchdog_interval,
            "options": {"queue": "runs", "expires": cfg.watchdog_interval},
        },
    }
