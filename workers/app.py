"""The Celery app, built once from the environment (SPEC §7 reliability settings)."""

from __future__ import annotations

import os
import sys

from celery import Celery
from kombu import Queue

from scoring.config import Settings

BATCH_QUEUE = "batches"  # score_batch: the bulk of a full recompute
RUN_QUEUE = "runs"  # prepare, merge/publish, scheduled jobs
INCREMENTAL_QUEUE = "incremental"  # ad-hoc NPIs: never stuck behind a recompute


def broker_url() -> str:
    """CELERY_BROKER_URL, else REDIS_URL, else a local Redis (development)."""
    return os.environ.get("CELERY_BROKER_URL") or os.environ.get(
        "REDIS_URL", "redis://127.0.0.1:6379/0"
    )


def backend_url() -> str:
    return os.environ.get("CELERY_RESULT_BACKEND") or broker_url()


def require_flower_auth(argv: list[str]) -> None:
    """Flower never runs open: basic auth must come from the environment, it listens on
    loopback unless told otherwise, and /metrics and /healthcheck need the credentials too."""
    if "flower" not in argv:
        return
    flag = any(arg.startswith("--basic-auth") or arg.startswith("--basic_auth") for arg in argv)
    if not os.environ.get("FLOWER_BASIC_AUTH") and not flag:
        msg = "Flower requires authentication: set FLOWER_BASIC_AUTH=user:password"
        raise SystemExit(msg)
    # Flower reads FLOWER_* variables before its command line (flower/command.py), so an
    # explicit --address still wins; its own default ('') is every interface.
    os.environ.setdefault("FLOWER_ADDRESS", "127.0.0.1")
    protect_flower_monitor()


def protect_flower_monitor() -> None:
    """Flower 2.2 serves /metrics and /healthcheck without @web.authenticated
    (flower/views/monitor.py); every other view has it. Give these two the same check,
    so Prometheus scrapes with the same basic-auth credentials as everyone else."""
    import tornado.web
    from flower.views import monitor

    for handler in (monitor.Metrics, monitor.Healthcheck):
        if not getattr(handler.get, "__wrapped__", None):
            handler.get = tornado.web.authenticated(handler.get)  # type: ignore[method-assign]


def create_app(cfg: Settings | None = None) -> Celery:
    require_flower_auth(sys.argv)
    cfg = cfg or Settings()
    broker = broker_url()
    if not broker.startswith(("redis://", "rediss://")):
        msg = "CELERY_BROKER_URL/REDIS_URL must be a redis:// or rediss:// URL"
        raise ValueError(msg)
    celery = Celery(
        "claidex",
        broker=broker,
        backend=backend_url(),
        include=["workers.tasks", "workers.scheduled"],
    )
    celery.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_memory_per_child=cfg.worker_max_memory_mb * 1024 or None,  # KB, peak RSS
        task_soft_time_limit=cfg.task_soft_time_limit,
        task_time_limit=cfg.task_time_limit,
        broker_transport_options={"visibility_timeout": cfg.visibility_timeout},
        result_backend_transport_options={"visibility_timeout": cfg.visibility_timeout},
        broker_connection_retry_on_startup=True,
        # A worker that loses the broker cancels its running tasks (they are redelivered
        # whole) instead of finishing work whose ack can no longer reach the broker.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        task_default_queue=RUN_QUEUE,
        task_queues=[Queue(BATCH_QUEUE), Queue(RUN_QUEUE), Queue(INCREMENTAL_QUEUE)],
        task_routes={
            "claidex.score_batch": {"queue": BATCH_QUEUE},
            "claidex.score_incremental": {"queue": INCREMENTAL_QUEUE},
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_track_started=True,
        result_extended=True,
        result_expires=7 * 24 * 3600,
        timezone="UTC",
    )
    from workers.schedule import beat_schedule

    celery.conf.beat_schedule = beat_schedule(cfg)
    return celery


app = create_app()
