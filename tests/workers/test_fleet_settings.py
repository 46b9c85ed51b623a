"""Fleet settings that must fail loudly, not misbehave quietly (issue: fleet faults)."""

from __future__ import annotations

import pytest
from celery.schedules import crontab

from scoring.config import Settings
from workers.schedule import parse_schedule


def test_a_zero_second_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="more than 0 seconds"):
        parse_schedule("0")
    assert parse_schedule("30") == 30.0


@pytest.mark.parametrize(
    ("text", "days"),
    [("0 3 * * 7", {0}), ("0 3 * * 0", {0}), ("0 3 * * 5-7", {5, 6, 0}), ("0 3 * * 1,7", {1, 0})],
)
def test_cron_sunday_may_be_7_as_in_crontab(text: str, days: set[int]) -> None:
    schedule = parse_schedule(text)
    assert isinstance(schedule, crontab)
    assert schedule.day_of_week == days


def test_a_malformed_schedule_names_itself() -> None:
    with pytest.raises(ValueError, match="schedule '0 25 \\* \\* \\*'"):
        parse_schedule("0 25 * * *")


def test_visibility_timeout_must_exceed_the_task_time_limit() -> None:
    with pytest.raises(ValueError, match="CLAIDEX_VISIBILITY_TIMEOUT \\(600 s\\) must exceed"):
        Settings(visibility_timeout=600, task_time_limit=2100)
    with pytest.raises(ValueError, match="SOFT_TIME_LIMIT must be below"):
        Settings(task_soft_time_limit=2100, task_time_limit=2100)
    assert Settings(visibility_timeout=3600, task_time_limit=2100).visibility_timeout == 3600


def test_flower_listens_on_loopback_and_guards_its_monitor_views(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flower.views import monitor

    from workers.app import require_flower_auth

    monkeypatch.delenv("FLOWER_ADDRESS", raising=False)
    monkeypatch.setenv("FLOWER_BASIC_AUTH", "ops:x")
    require_flower_auth(["celery", "flower"])
    import os

    assert os.environ["FLOWER_ADDRESS"] == "127.0.0.1"
    assert monitor.Metrics.get.__wrapped__ and monitor.Healthcheck.get.__wrapped__


def test_workers_cancel_running_tasks_when_they_lose_the_broker() -> None:
    from workers.app import app

    assert app.conf.worker_cancel_long_running_tasks_on_connection_loss is True
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert "watchdog" in app.conf.beat_schedule
