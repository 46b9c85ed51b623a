"""Hand a full recompute to the deployed Modal app (Celery beat with CLAIDEX_FULL_ENGINE=modal).

The one module of modal_burst another engine imports: workers.tasks, lazily, for
`spawn_full_run` and the `ModalNotConfiguredError` it falls back to the fleet on
(tests/test_import_rules.py holds both engines to that)."""

from __future__ import annotations

from modal_burst.burst import ModalRemote, one_line
from modal_burst.credentials import TOKEN_REJECTED, ModalNotConfiguredError, require_credentials
from modal_burst.driver import find_secrets, run_overrides
from modal_burst.run_secrets import STEPS, MissingSecretError, RunNeeds
from scoring.config import Settings
from scoring.db.connection import database_url


class StaysOnFleetError(ModalNotConfiguredError):
    """The configuration keeps beat's run on the fleet (a fleet path): a choice, not a fault."""


def scheduled_source(cfg: Settings) -> str:
    """What beat's weekly run reads on Modal: what it reads on the fleet. Postgres when a
    database is configured; the volume's last uploaded dataset only when chosen
    (CLAIDEX_MODAL_SOURCE=volume); a CLAIDEX_SCHEDULED_DATA path, which no container can
    read, keeps the run on the fleet."""
    if cfg.modal_source is not None:
        return cfg.modal_source
    if cfg.scheduled_data is not None:
        msg = (
            f"CLAIDEX_SCHEDULED_DATA ({cfg.scheduled_data}) is a path on the fleet that Modal "
            "containers cannot read (CLAIDEX_MODAL_SOURCE=volume scores the volume's last "
            "uploaded dataset instead)"
        )
        raise StaysOnFleetError(msg)
    if database_url() is None:
        msg = (
            "scheduled runs read Postgres (DATABASE_URL) or CLAIDEX_SCHEDULED_DATA, and neither "
            "is set (CLAIDEX_MODAL_SOURCE=volume scores the volume's last uploaded dataset)"
        )
        raise ModalNotConfiguredError(msg)
    return "postgres"


def spawn_full_run(run_id: str, cfg: Settings, *, publish: bool = True) -> str:
    """Start `run_full` on the deployed app and return its call id without waiting for it.

    The secrets the run will need are looked up first: a spawned run that cannot find one
    would fail where nobody watches, while an error here sends the run to the fleet. Their
    names travel in the run's settings (`run_overrides`), so `run_full` attaches exactly the
    secrets checked here and records them in run.json for a later resume."""
    require_credentials()
    import modal
    from modal.exception import AuthError, NotFoundError
    from modal.exception import Error as ModalError

    source = scheduled_source(cfg)
    overrides = run_overrides(cfg)
    needs = RunNeeds.of_request(overrides, source, publish, cfg.modal_data_name)
    try:
        find_secrets(ModalRemote({}), needs, STEPS)
        function = modal.Function.from_name(cfg.modal_app_name, "run_full")
        call = function.spawn(run_id, source, cfg.modal_data_name, overrides, publish)
    except MissingSecretError as exc:
        raise ModalNotConfiguredError(str(exc)) from None
    except NotFoundError as exc:
        msg = (
            f"Modal app {cfg.modal_app_name!r} is not deployed (or has no run_full): "
            f"run `modal deploy -m modal_burst.app` ({exc})"
        )
        raise ModalNotConfiguredError(msg) from None
    except AuthError:
        raise ModalNotConfiguredError(TOKEN_REJECTED) from None
    except (ModalError, ConnectionError) as exc:  # Modal unreachable or refusing: same fallback
        raise ModalNotConfiguredError(f"Modal unavailable: {one_line(exc)}") from None
    return str(call.object_id)
