"""`python -m modal_burst check`: what a burst would use, and whether it holds (like `dbt debug`).

Without credentials it checks what this machine can: the image's locked package closure,
the names of the app, volume and secrets (with the keys each secret must hold), the source
a scheduled run reads, and the limits in force. With credentials it also asks the account:
the volume exists and is v2, each secret holds its keys, and the app is deployed with this
package version and lock. Exit 0 when everything checked holds, else 1 with the problems.
"""

from __future__ import annotations

import importlib.metadata
import sys
from dataclasses import dataclass, field
from typing import Protocol

from modal_burst import limits
from modal_burst.credentials import ModalNotConfiguredError, require_credentials
from modal_burst.handoff import scheduled_source
from modal_burst.image import build_stamp, package_version
from modal_burst.layout import VOLUME_VERSION, migration_steps
from modal_burst.run_secrets import NEO4J_REQUIRED, NEO4J_STEPS, postgres_keys
from scoring.config import Settings
from scoring.errors import ClaidexError

NEO4J_MODES = tuple(NEO4J_STEPS)
BUILD_INFO_TIMEOUT = 120  # seconds: a cold container start, not a crash loop


class Account(Protocol):
    """What `check` asks of a Modal workspace (ModalAccount; a stand-in in tests)."""

    def volume_version(self, name: str) -> int | None:
        """The named volume's version; None when there is none."""
        ...

    def secret_problem(self, name: str, keys: tuple[str, ...]) -> str | None:
        """Why the named secret cannot serve (missing, or lacking a key); None when it can."""
        ...

    def deployed_build(self, app: str) -> dict[str, str] | None:
        """The deployed app's `build_info` (package version, lock digest); None: not deployed."""
        ...


@dataclass
class Findings:
    """What check found, printed as it is found (an account call may be slow or fail)."""

    echo: bool = False
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)
        if self.echo:
            print(line, flush=True)

    def problem(self, line: str) -> None:
        self.problems.append(line)
        if self.echo:
            print(f"problem: {line}", file=sys.stderr, flush=True)


def _image(found: Findings) -> None:
    from modal_burst.image import PYTHON_VERSION, container_lock, locked_packages, uv_version

    try:
        lock = container_lock()
        packages = locked_packages(lock)
        uv = uv_version()
    except ClaidexError as exc:
        found.problem(f"image: {exc}")
        return
    found.say(
        f"image: debian_slim, Python {PYTHON_VERSION}, uv {uv}; {len(packages)} locked "
        f"packages from {lock} (build {build_stamp()['lock']})"
    )
    found.say("  " + " ".join(f"{name}=={version}" for name, version in sorted(packages.items())))


def _names(cfg: Settings, found: Findings) -> tuple[tuple[str, ...], bool]:
    found.say(
        f"app: {cfg.modal_app_name}; volume: {cfg.modal_volume} (v{VOLUME_VERSION}, mounted "
        f"at {cfg.modal_mount}); dataset for volume runs: {cfg.modal_data_name}"
    )
    try:
        keys = postgres_keys(cfg.modal_postgres_keys)
    except ClaidexError as exc:
        found.problem(str(exc))
        keys = ()
    found.say(
        f"secret {cfg.modal_postgres_secret}: must hold {', '.join(keys) or '?'} (publishing "
        "runs' merge; prepare and export shards of --source postgres runs)"
    )
    needs_neo4j = cfg.graph_mode in NEO4J_MODES
    used = "used" if needs_neo4j else f"not used by graph mode {cfg.graph_mode}"
    found.say(
        f"secret {cfg.modal_neo4j_secret}: must hold {', '.join(NEO4J_REQUIRED)} "
        f"(graph modes {', '.join(NEO4J_MODES)}; {used})"
    )
    return keys, needs_neo4j


def _scheduled(cfg: Settings, found: Findings) -> None:
    """As beat would decide it with this environment (run check where beat runs to see
    beat's own answer)."""
    head = "scheduled run (CLAIDEX_FULL_ENGINE=modal, with this environment)"
    try:
        source = scheduled_source(cfg)
    except ModalNotConfiguredError as exc:
        found.say(f"{head}: stays on the fleet: {exc}")
        return
    chosen = "CLAIDEX_MODAL_SOURCE" if cfg.modal_source else "a database is configured"
    found.say(f"{head} reads: {source} ({chosen})")


def _limits(cfg: Settings, found: Findings) -> None:
    found.say(
        f"limits: max_containers {cfg.modal_max_containers} per function (a Starter workspace "
        f"is reported at {limits.STARTER_WORKSPACE_CONTAINERS}, unverified); .map window "
        f"{cfg.modal_map_window} inputs; Modal: {limits.MAP_CONCURRENT_INPUTS:,} inputs "
        f"running per map, {limits.FUNCTION_PENDING_INPUTS:,} pending and "
        f"{limits.FUNCTION_TOTAL_INPUTS:,} in all per function, "
        f"{limits.SPAWN_PENDING_INPUTS:,} pending .spawn"
    )
    for scale in (1, 5):
        size = limits.burst_size(
            cfg, scale * limits.SEED_PROVIDERS, scale * limits.SEED_PAYMENT_ROWS
        )
        found.say(
            f"  {scale}x seed: {size.shards} shards per stage, <= {size.batches} batches, "
            f"largest .map {size.largest_map}"
        )
        for problem in size.problems():
            found.problem(f"{scale}x seed: {problem}")


def _account(
    cfg: Settings, account: Account, keys: tuple[str, ...], neo4j: bool, found: Findings
) -> None:
    """Each question on its own: one that fails (Modal unreachable, a token refused, a
    deployment whose containers crash) is a problem line, and the others are still asked."""
    for ask in (_volume, _secrets, _deployed):
        try:
            ask(cfg, account, keys, neo4j, found)
        except Exception as exc:
            text = str(exc).strip().splitlines()
            found.problem(f"{ask.__name__[1:]}: {type(exc).__name__}: {text[0] if text else ''}")


def _volume(
    cfg: Settings, account: Account, keys: tuple[str, ...], neo4j: bool, found: Findings
) -> None:
    version = account.volume_version(cfg.modal_volume)
    if version == VOLUME_VERSION:
        found.say(f"account: volume {cfg.modal_volume} exists, v{version}")
    elif version is None:
        found.problem(
            f"volume {cfg.modal_volume} does not exist: `python -m modal_burst upload DIR` "
            "creates it (or use --source postgres)"
        )
    else:
        found.problem(
            f"volume {cfg.modal_volume} is v{version}; {migration_steps(cfg.modal_volume)}"
        )


def _secrets(
    cfg: Settings, account: Account, keys: tuple[str, ...], neo4j: bool, found: Findings
) -> None:
    secrets = [
        (cfg.modal_postgres_secret, keys, True),
        (cfg.modal_neo4j_secret, NEO4J_REQUIRED, neo4j),
    ]
    for name, wanted, needed in secrets:
        problem = account.secret_problem(name, wanted)
        if problem is None:
            found.say(f"account: secret {name} holds {', '.join(wanted)}")
        elif needed:
            found.problem(f"secret {name}: {problem}")
        else:
            found.say(f"account: secret {name}: {problem} (not needed now)")


def _deployed(
    cfg: Settings, account: Account, keys: tuple[str, ...], neo4j: bool, found: Findings
) -> None:
    deployed = account.deployed_build(cfg.modal_app_name)
    here = build_stamp()
    if deployed == {}:
        found.problem(
            f"app {cfg.modal_app_name} is deployed without build_info (an older claidex): "
            "redeploy with `modal deploy -m modal_burst.app`"
        )
    elif deployed is None:
        found.problem(
            f"app {cfg.modal_app_name} is not deployed (`modal deploy -m modal_burst.app`; "
            "needed for --deployed and beat's runs)"
        )
    elif deployed != here:
        found.problem(
            f"app {cfg.modal_app_name} is deployed with claidex {deployed.get('version')} (lock "
            f"{deployed.get('lock')}, code {deployed.get('code')}), this client is "
            f"{here['version']} (lock {here['lock']}, code {here['code']}): redeploy with "
            "`modal deploy -m modal_burst.app`"
        )
    else:
        found.say(
            f"account: app {cfg.modal_app_name} deployed with claidex {here['version']} "
            f"(lock {here['lock']}, code {here['code']}), as this client"
        )


def run_check(cfg: Settings, account: Account | None, *, echo: bool = False) -> Findings:
    found = Findings(echo=echo)
    found.say(f"claidex {package_version()}, modal {importlib.metadata.version('modal')}")
    _image(found)
    keys, neo4j = _names(cfg, found)
    _scheduled(cfg, found)
    _limits(cfg, found)
    if account is not None:
        _account(cfg, account, keys, neo4j, found)
    return found


@dataclass(frozen=True)
class ModalAccount:
    """The real workspace, through the Modal client."""

    def volume_version(self, name: str) -> int | None:
        import modal
        from modal.exception import InvalidError, NotFoundError

        try:
            modal.Volume.from_name(name, version=VOLUME_VERSION, create_if_missing=False).hydrate()
        except NotFoundError:
            return None
        except InvalidError as exc:  # "exists but has version v1"
            if "has version v1" in str(exc):
                return 1
            raise
        return VOLUME_VERSION

    def secret_problem(self, name: str, keys: tuple[str, ...]) -> str | None:
        import modal
        from modal.exception import ConflictError, InvalidError, NotFoundError

        try:
            modal.Secret.from_name(name, required_keys=list(keys)).hydrate()
        except (NotFoundError, InvalidError, ConflictError) as exc:
            return f"missing or lacks {', '.join(keys)} ({str(exc).splitlines()[0]})"
        return None

    def deployed_build(self, app: str) -> dict[str, str] | None:
        """None: no such app; {}: deployed without build_info. The call waits at most
        BUILD_INFO_TIMEOUT s (`FunctionCall.get(timeout=...)`): a deployment whose containers
        cannot start would otherwise keep it waiting while Modal retries them."""
        import modal
        from modal.exception import NotFoundError

        try:
            modal.Function.from_name(app, "run_status").hydrate()
        except NotFoundError:
            return None
        try:
            function = modal.Function.from_name(app, "build_info")
            function.hydrate()
        except NotFoundError:
            return {}
        return dict(function.spawn().get(timeout=BUILD_INFO_TIMEOUT))


def check_command(account: Account | None = None) -> int:
    """Print the findings as they come; `account` None: the real one when credentials are
    configured."""
    cfg = Settings()
    reason = ""
    if account is None:
        try:
            require_credentials()
        except ModalNotConfiguredError as exc:
            reason = str(exc)
        else:
            account = ModalAccount()
    found = run_check(cfg, account, echo=True)
    if account is None:
        print(f"account: not checked ({reason})")
    print("ok" if not found.problems else f"{len(found.problems)} problem(s)")
    return 0 if not found.problems else 1
