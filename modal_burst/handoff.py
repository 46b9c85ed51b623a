"""Hand a full recompute to the deployed Modal app (Celery beat with CLAIDEX_FULL_ENGINE=modal).

The one module of modal_burst another engine imports: workers.tasks, lazily, for
`spawn_full_run` and the `ModalNotConfiguredError` it falls back to the fleet on
(tests/test_import_rules.py holds both engines to that)."""

from __future__ import annotations

from modal_burst.credentials import TOKEN_REJECTED, ModalNotConfiguredError, require_credentials
from modal_burst.driver import ModalRemote, find_secrets, one_line, run_overrides
from modal_burst.run_secrets import STEPS, MissingSecretError, RunNeeds
from scoring.config import Settings


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

    overrides = run_overrides(cfg)
    needs = RunNeeds.of_request(overrides, cfg.modal_source, publish)
    try:
        find_secrets(ModalRemote({}), needs, STEPS)
        function = modal.Function.from_name(cfg.modal_app_name, "run_full")
        call = function.spawn(run_id, cfg.modal_source, cfg.modal_data_name, overrides, publish)
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
