"""The Modal App: image, volume, and one function per run step (no scoring logic, no secrets).

`modal deploy -m modal_burst.app` deploys it; `python -m modal_burst full` runs it
ephemerally. Limits come from Settings (CLAIDEX_MODAL_*), read when this module is
imported, so deploy with the same environment the runs should use. Secrets are not
declared here: the driver attaches each step's secrets per run (`run_secrets`), so a
user without a Postgres secret can still run `--no-publish` bursts from a volume dataset.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import modal

from modal_burst import bodies
from modal_burst.image import LOCAL_SOURCES as LOCAL_SOURCES  # the stand-in copies them
from modal_burst.image import LockError, build_stamp, container_image
from modal_burst.layout import VolumeLayout, named_volume
from modal_burst.run_secrets import S3_REQUIRED
from scoring.config import Settings
from scoring.location import is_url

CFG = Settings()
# Containers see the deployer's mount. Secret names are not here: a run carries its own
# (frozen into run.json at prepare; run_full gets them from the hand-off).
IMAGE_ENV = {"CLAIDEX_MODAL_MOUNT": str(CFG.modal_mount)}
if CFG.modal_run_root:  # runs on S3: every function reads and writes there
    IMAGE_ENV["CLAIDEX_MODAL_RUN_ROOT"] = CFG.modal_run_root

app = modal.App(CFG.modal_app_name)
volume = named_volume(CFG.modal_volume)
try:
    if modal.is_local():  # in a container the image is built already, stamp included
        stamp = build_stamp()
        IMAGE_ENV |= {
            "CLAIDEX_BUILD_VERSION": stamp["version"],
            "CLAIDEX_BUILD_LOCK": stamp["lock"],
            "CLAIDEX_BUILD_CODE": stamp["code"],
        }
    image = container_image(IMAGE_ENV)
except LockError as exc:
    # One line from `python -m modal_burst` and `modal deploy -m modal_burst.app` alike: modal's
    # CLI turns an exception raised on import into a traceback (cli/import_refs.py::
    # import_file_or_module, modal/__main__.py::main) but lets SystemExit through.
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2) from None


def retries(cfg: Settings) -> modal.Retries:
    """For exceptions and timeouts, and, for `.map` inputs, lost inputs too: a container that
    dies (out of memory) counts against max_retries with no delay (`parallel_map.py::
    _MapItemContext.handle_get_outputs_response`), after which the driver gets InternalFailure.
    Where Modal retries a dead container without counting (a deployed app's server
    reschedules a crashed container's input without end), the run's batch_max_attempts and
    step_max_attempts bound it. Modal cannot tell failures apart, so the bodies return what
    scoring.runs.retry_policy calls exhausted instead of raising it."""
    return modal.Retries(max_retries=cfg.modal_retries, backoff_coefficient=2.0, initial_delay=5.0)


def worker() -> str:
    """This container, as attempt records name it."""
    return os.environ.get("MODAL_TASK_ID") or socket.gethostname()


def layout() -> VolumeLayout:
    """The volume as functions see it (CLAIDEX_MODAL_MOUNT points tests at a directory)."""
    cfg = Settings()
    return VolumeLayout(cfg.modal_mount, cfg.modal_run_root)


def commit_volume() -> None:
    """Make this container's writes visible to other containers now; whatever a container
    has not committed when it is killed is lost (the steps and batches commit their attempt
    record at once, so a container killed mid-step still counts). Modal reloads the view
    after a commit (`volume.py::_Volume.commit`), so, like reload, it raises RuntimeError
    while any file of the volume is open in the container: call it with none open."""
    if not modal.is_local():
        volume.commit()


@contextmanager
def synced_volume() -> Iterator[None]:
    """See other containers' commits first; make this call's files visible, even on failure.
    A commit that fails after the call failed (an open file, `volume.py::_Volume.commit`'s
    reload) is a note on the call's own error, never in its place."""
    if not modal.is_local():
        volume.reload()
    try:
        yield
    except BaseException as exc:
        try:
            commit_volume()
        except Exception as commit_error:
            exc.add_note(f"the volume commit after it failed too: {commit_error}")
        raise
    commit_volume()


COMMON: dict[str, Any] = {"image": image, "volumes": {str(CFG.modal_mount): volume}}
if is_url(CFG.modal_run_root):
    # every function reads the runs, so every function carries the S3 credentials (a run
    # step's secrets come from the driver's with_options, which puts this one first)
    COMMON["secrets"] = [
        modal.Secret.from_name(CFG.modal_s3_secret, required_keys=list(S3_REQUIRED))
    ]
STEP = {"cpu": CFG.modal_step_cpu}
OPTIONS: dict[str, dict[str, Any]] = {  # per function, besides image and volume
    # prepare (the plan), the single prepare steps and merge without Modal retries: their failures
    # (bad input, wrong password) would only repeat; `python -m modal_burst resume|merge RUN`
    # is the recovery. A crashed container is still rescheduled by Modal's server (without
    # end in a deployed app): step_max_attempts bounds that
    "prepare": {**STEP, "timeout": CFG.modal_prepare_timeout, "memory": CFG.modal_prepare_memory},
    "stage_shard": {
        "max_containers": CFG.modal_max_containers,
        "timeout": CFG.modal_stage_timeout,
        "memory": CFG.modal_stage_memory,
        "cpu": CFG.modal_batch_cpu,
        "retries": retries(CFG),
    },
    "stage_single": {
        **STEP,
        "timeout": CFG.modal_prepare_timeout,
        "memory": CFG.modal_prepare_memory,
    },
    "score_batch": {
        "max_containers": CFG.modal_max_containers,
        "timeout": CFG.modal_batch_timeout,
        "memory": CFG.modal_batch_memory,
        "cpu": CFG.modal_batch_cpu,
        "retries": retries(CFG),
    },
    "merge_and_calibrate": {
        **STEP,
        "timeout": CFG.modal_merge_timeout,
        "memory": CFG.modal_merge_memory,
    },
    "run_status": {"timeout": 120},
    "record_status": {"timeout": 120},
    "run_full": {"timeout": CFG.modal_driver_timeout},
}


@app.function(**COMMON, **OPTIONS["prepare"])
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
            worker=worker(),
            on_start=commit_volume,
        )


@app.function(**COMMON, **OPTIONS["stage_shard"])
def stage_shard(index: int, run_id: str, stage: str) -> dict[str, Any]:
    with synced_volume():
        return bodies.stage_shard(
            layout(), run_id, stage, index, worker=worker(), on_start=commit_volume
        )


@app.function(**COMMON, **OPTIONS["stage_single"])
def stage_single(run_id: str, step: str) -> dict[str, Any]:
    with synced_volume():
        return bodies.single_step(layout(), run_id, step, worker=worker(), on_start=commit_volume)


@app.function(**COMMON, **OPTIONS["score_batch"])
def score_batch(batch_index: int, run_id: str) -> dict[str, Any]:
    with synced_volume():
        return bodies.score_one_batch(
            layout(), run_id, batch_index, worker(), on_start=commit_volume
        )


@app.function(**COMMON, **OPTIONS["merge_and_calibrate"])
def merge_and_calibrate(run_id: str, publish: bool, accept: str | None = None) -> dict[str, Any]:
    with synced_volume():
        return bodies.merge_run(
            layout(),
            run_id,
            publish=publish,
            accept=accept,
            worker=worker(),
            on_start=commit_volume,
        )


@app.function(**COMMON, **OPTIONS["run_status"])
def run_status(run_id: str) -> dict[str, Any]:
    with synced_volume():
        return bodies.run_state(layout(), run_id)


@app.function(**COMMON, **OPTIONS["record_status"])
def record_status(
    run_id: str,
    status: str,
    step: str | None,
    error: str | None,
    batch_errors: dict[int, str] | None = None,
) -> None:
    with synced_volume():
        bodies.record_status(
            layout(), run_id, status, step=step, error=error, batch_errors=batch_errors
        )


@app.function(image=image, **OPTIONS["run_full"])
def run_full(
    run_id: str, source: str, data_name: str, overrides: dict[str, Any], publish: bool
) -> dict[str, Any]:
    """A whole burst inside Modal: what Celery beat spawns when CLAIDEX_FULL_ENGINE=modal."""
    from modal_burst.burst import BurstRequest, ModalRemote
    from modal_burst.driver import run_burst

    request = BurstRequest(run_id, source, data_name, overrides, publish=publish)
    return run_burst(ModalRemote(FUNCTIONS), request, show_progress=False).as_dict()


@app.function(image=image, timeout=60)
def build_info() -> dict[str, str]:
    """The claidex version and container lock this deployment was built from (`check`)."""
    return {
        "version": os.environ.get("CLAIDEX_BUILD_VERSION", "unknown"),
        "lock": os.environ.get("CLAIDEX_BUILD_LOCK", "unknown"),
        "code": os.environ.get("CLAIDEX_BUILD_CODE", "unknown"),
    }


FUNCTIONS: dict[str, Any] = {
    "prepare": prepare,
    "stage_shard": stage_shard,
    "stage_single": stage_single,
    "score_batch": score_batch,
    "merge_and_calibrate": merge_and_calibrate,
    "run_status": run_status,
    "record_status": record_status,
}
