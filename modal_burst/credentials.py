"""Fail fast, in one line, when this machine cannot talk to Modal.

Mirrors how modal 1.6.4 authenticates a client (`modal/client.py::_Client.from_env`):
inside a Modal container the task authenticates itself; elsewhere either a token
(MODAL_TOKEN_ID + MODAL_TOKEN_SECRET, or token_id/token_secret in the active profile of
~/.modal.toml) or OAuth credentials (MODAL_OAUTH_REFRESH_TOKEN + MODAL_OAUTH_CLIENT_ID +
exactly one of MODAL_OAUTH_CLIENT_SECRET / MODAL_OAUTH_JWT_KEY, or the same keys in the
profile), never both kinds at once.
"""

from __future__ import annotations

from collections.abc import Callable
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
    from modal.config import _is_remote, config

    problem = credential_problem(config.get, in_container=_is_remote())
    if problem is not None:
        raise ModalNotConfiguredError(problem)
