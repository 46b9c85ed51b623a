"""Fail fast, in one line, when this machine cannot talk to Modal."""

from __future__ import annotations

from scoring.errors import ClaidexError

HOW_TO_AUTHENTICATE = (
    "no Modal credentials: run `modal token new` (writes ~/.modal.toml) or set "
    "MODAL_TOKEN_ID and MODAL_TOKEN_SECRET, then try again"
)


TOKEN_REJECTED = "Modal rejected the configured token: run `modal token new`"


class ModalNotConfiguredError(ClaidexError):
    """Modal cannot be used from here: no token, or the app is not deployed."""


def require_credentials() -> None:
    """Raise before any network call when neither the environment nor ~/.modal.toml has a token."""
    from modal.config import config

    if not (config.get("token_id") and config.get("token_secret")):
        raise ModalNotConfiguredError(HOW_TO_AUTHENTICATE)
