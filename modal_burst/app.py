"""The Modal App: image, volume, secrets, and one function per run step (no scoring logic).

`modal deploy -m modal_burst.app` deploys it; `python -m modal_burst full` runs it
ephemerally. Limits come from Settings (CLAIDEX_MODAL_*), read when this module is
imported, so deploy with the same environment the runs should use.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import modal

from modal_burst import bodies
from modal_burst.layout import VolumeLayout
from scoring.config import Settings

CFG = Settings()
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"

app = modal.App(CFG.modal_app_name)
volume = modal.Volume.from_name(CFG.modal_volume, create_if_missing=True)
image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install_from_pyproject(str(PYPROJECT))  # the project's pinned dependencies
    .env({"CLAIDEX_MODAL_MOUNT": str(CFG.modal_mount)})  # containers see the deployer's mount
    .add_local_python_source("scoring", "modal_burst")
)
POSTGRES = modal.Secret.from_name(CFG.modal_postgres_secret)
NEO4J = modal.Secret.from_name(CFG.modal_neo4j_secret)


def step_secrets(step: str, cfg: Settings) -> list[modal.Secret]:
    """Each step gets only the secrets it uses: Postgres to export and publish, Neo4j only in
    the graph modes that read it there (snapshot in prepare, live in every batch)."""
    secrets = [POSTGRES] if step in ("prepare", "merge_and_calibrate") else []
    neo4j_steps = {"neo4j-snapshot": ("prepare",), "neo4j-live": ("prepare", "score_batch")}
    if step in neo4j_steps.get(cfg.graph_mode, ()):
        secrets.append(NEO4J)
    return secrets


def retries(cfg: Settings) -> modal.Retries:
    return modal.Retries(max_retries=cfg.modal_retries, backoff_coefficient=2.0, initial_delay=5.0)


def layout() -> VolumeLayout:
    """The volume as functions see it (CLAIDEX_MODAL_MOUNT points tests at a directory)."""
    return VolumeLayout(Settings().modal_mount)


@contextmanager
def synced_volume() -> Iterator[None]:
    """See other containers' commits first; make this call's files visible, even on failure."""
    if not modal.is_local():
        volume.reload()
    try:
        yield
    finally:
        if not modal.is_local():
            volume.commit()


COMMON: dict[str, Any] = {"image": image, "volumes": {str(CFG.modal_mount): volume}}


@app.function(
    **COMMON,
    secrets=step_secrets("prepare", CFG),
    timeout=CFG.modal_prepare_timeout,
    memory=CFG.modal_prepare_memory,
    cpu=CFG.modal_step_cpu,
)  # no Modal retries: its failures (bad input, wrong password) would only repeat
def prepare(
    run_id: str, source: str, data_name: str, overrides: dict[str, Any], publish: bool
) -> dict[str, Any]:
    with synced_volume():
        return bodies.prepare_run(
            layout(),
            run_id,
            source=source,
            data_name=data_name,
            overrides=overrides,
            publish=publish,
        )


SCORE_BATCH_OPTIONS: dict[str, Any] = {
    "max_containers": CFG.modal_max_containers,
    "timeout": CFG.modal_batch_timeout,
    "memory": CFG.modal_batch_memory,
    "cpu": CFG.modal_batch_cpu,
    "retries": retries(CFG),
}


@app.function(**COMMON, secrets=step_secrets("score_batch", CFG), **SCORE_BATCH_OPTIONS)
def score_batch(batch_index: int, run_id: str) -> dict[str, Any]:
    worker = os.environ.get("MODAL_TASK_ID") or socket.gethostname()
    with synced_volume():
        return bodies.score_one_batch(layout(), run_id, batch_index, worker)


@app.function(
    **COMMON,
    secrets=step_secrets("merge_and_calibrate", CFG),
    timeout=CFG.modal_merge_timeout,
    memory=CFG.modal_merge_memory,
    cpu=CFG.modal_step_cpu,
)  # no Modal retries: `python -m modal_burst merge RUN` is the recovery
def merge_and_calibrate(run_id: str, publish: bool) -> dict[str, Any]:
    with synced_volume():
        return bodies.merge_run(layout(), run_id, publish=publish)


@app.function(**COMMON, timeout=120)
def run_status(run_id: str) -> dict[str, Any]:
    with synced_volume():
        return bodies.run_state(layout(), run_id)


@app.function(**COMMON, timeout=120)
def record_status(run_id: str, status: str, step: str | None, error: str | None) -> None:
    with synced_volume():
        bodies.record_status(layout(), run_id, status, step=step, error=error)


@app.function(image=image, timeout=CFG.modal_driver_timeout)
def run_full(
    run_id: str, source: str, data_name: str, overrides: dict[str, Any], publish: bool
) -> dict[str, Any]:
    """A whole burst inside Modal: what Celery beat spawns when CLAIDEX_FULL_ENGINE=modal."""
    from modal_burst.driver import BurstRequest, run_burst

    request = BurstRequest(run_id, source, data_name, overrides, publish=publish)
    return run_burst(FUNCTIONS, request, show_progress=False).as_dict()


FUNCTIONS: dict[str, Any] = {
    "prepare": prepare,
    "score_batch": score_batch,
    "merge_and_calibrate": merge_and_calibrate,
    "run_status": run_status,
    "record_status": record_status,
}
