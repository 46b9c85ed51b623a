"""Fail fast, in one line, when this machine cannot talk to Modal.

Mirrors how modal 1.6.4 authenticates a client (`modal/client.py::_Client.from_env`):
inside a Modal container the task authenticates itself; elsewhere either a token
(MODAL_TOKEN_ID + MODAL_TOKEN_SECRET, or token_id/token_secret in the active profile of
~/.modal.toml) or OAuth credentials (MODAL_OAUTH_REFRESH_TOKEN + MODAL_OAUTH_CLIENT_ID +
exactly one of MODAL_OAUTH_CLIENT_SECRET / MODAL_OAUTH_JWT_KEY, or the same keys in the
profile), never both kinds at once. Before any of that, Modal refuses a ~/.modal.toml it
cannot parse (`config.py::_read_user_config` raises InvalidError while `modal` is
imported) and several profiles of which none or more than one is active
(`config.py::_check_config`, called by `_Client.from_env`); each is one line here.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from scoring.errors import ClaidexError

HOW_TO_AUTHENTICATE = (
    "no Modal credentials: run `modal token new` (writes ~/.modal.toml) or set "
    "MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (or MODAL_OAUTH_REFRESH_TOKEN, MODAL_OAUTH_CLIENT_ID "
    "and MODAL_OAUTH_CLIENT_SECRET or MODAL_OAUTH_JWT_KEY), then try again"
)
BOTH_KINDS = (
    "Modal token and OAuth credentials are both configured and Modal accepts only one kind: "
    "unset MODAL_TOKEN_* or MODAL_OAUTH_* (or remove them from ~/.modal.toml)"
)
INCOMPLETE_OAUTH = (
    "incomplete Modal OAuth credentials: Modal needs MODAL_OAUTH_REFRESH_TOKEN, "
    "MODAL_OAUTH_CLIENT_ID and exactly one of MODAL_OAUTH_CLIENT_SECRET or MODAL_OAUTH_JWT_KEY"
)
TOKEN_REJECTED = "Modal rejected the configured token: run `modal token new`"
OAUTH_KEYS = ("oauth_refresh_token", "oauth_client_id", "oauth_client_secret", "oauth_jwt_key")


class ModalNotConfiguredError(ClaidexError):
    """Modal cannot be used from here: no token, or the app is not deployed."""


def _config_file() -> str:
    return os.environ.get("MODAL_CONFIG_PATH") or os.path.expanduser("~/.modal.toml")


def unreadable_config(exc: BaseException) -> str:
    """One line for modal's InvalidError on a malformed config file: where, and the position
    of the TOML error (never the text around it, which may hold a token)."""
    where = re.search(r"line \d+ column \d+", str(exc))
    problem = f"not valid TOML at {where.group(0)}" if where else "not valid TOML"
    if "table sections" in str(exc):
        problem = "not one [section] per profile"
    return (
        f"Modal cannot read its config file {_config_file()}: {problem}; fix it, or move it "
        "away and run `modal token new`"
    )


def modal_config() -> ModuleType:
    """modal.config, imported here so a malformed config file is one ModalNotConfiguredError
    instead of modal's traceback (modal reads the file when it is first imported)."""
    banner = io.StringIO()  # modal prints "installation seems broken" when its import fails
    try:
        with contextlib.redirect_stdout(banner):
            from modal import config
    except Exception as exc:
        if type(exc).__name__ != "InvalidError" or "modal configuration" not in str(exc):
            sys.stdout.write(banner.getvalue())
            raise
        raise ModalNotConfiguredError(unreadable_config(exc)) from None
    sys.stdout.write(banner.getvalue())
    return config


def profile_problem(config: ModuleType) -> str | None:
    """What Modal's `_check_config` refuses (several profiles, none or two active), in one
    line; None when it accepts the file."""
    from modal.exception import InvalidError

    try:
        config._check_config()
    except InvalidError as exc:
        return " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return None


def missing_profile(config: ModuleType) -> str | None:
    """The profile Modal reads (MODAL_PROFILE, else the active one, else 'default') missing
    from a config file that has others: Modal then reads no credentials from the file at
    all. One line; None otherwise."""
    chosen = str(config._profile)
    named = os.environ.get("MODAL_PROFILE")
    profiles = sorted(config.config_profiles())
    if chosen in profiles or not (profiles or named):
        return None
    has = f"it has {', '.join(profiles)}" if profiles else "it has none"
    if named:
        return (
            f"MODAL_PROFILE={named!r} names no profile of {_config_file()} ({has}): unset "
            "MODAL_PROFILE or set it to one of those"
        )
    return (
        f"{_config_file()} has no active profile and no 'default' one ({has}): "
        f"run `modal profile activate {profiles[0]}`"
    )


def credential_problem(get: Callable[[str], Any], *, in_container: bool) -> str | None:
    """Why Modal would refuse to build a client from this configuration, else None.

    `get` reads one setting as modal.config.config.get does (MODAL_<KEY>, then the profile)."""
    if in_container:
        return None
    token = [get("token_id"), get("token_secret")]
    refresh, client_id, client_secret, jwt_key = (get(key) for key in OAUTH_KEYS)
    has_oauth = any((refresh, client_id, client_secret, jwt_key))
    if any(token) and has_oauth:
        return BOTH_KINDS
    if has_oauth:
        complete = refresh and client_id and bool(client_secret) != bool(jwt_key)
        return None if complete else INCOMPLETE_OAUTH
    return None if all(token) else HOW_TO_AUTHENTICATE


def require_credentials() -> None:
    """Raise before any network call when no credential form Modal accepts is configured."""
    config = modal_config()
    in_container = config._is_remote()
    problem = None if in_container else profile_problem(config)
    if problem is None:
        problem = credential_problem(config.config.get, in_container=in_container)
    if problem == HOW_TO_AUTHENTICATE:
        problem = missing_profile(config) or problem
    if problem is not None:
        raise ModalNotConfiguredError(problem)
