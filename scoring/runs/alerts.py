"""One message to the on-call channel when a run fails, is blocked or stalls.

CLAIDEX_ALERT_WEBHOOK (read when used, never frozen into a run: a webhook URL is a
credential) receives a Slack-compatible `{"text": ...}` POST. Delivery is retried within
`alert_timeout` seconds in all, never raises, and the text is scrubbed of every credential
the process holds (URL passwords, *PASSWORD/*SECRET/*TOKEN/*KEY variables, the webhook)."""

from __future__ import annotations

import json
import logging
import os
import re
import time
import urllib.error
import urllib.request

from scoring.config import load_settings

WEBHOOK = "CLAIDEX_ALERT_WEBHOOK"
SECRET_NAMES = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY$|URL$|URI$|WEBHOOK$|PUSHGATEWAY$)")
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@", re.IGNORECASE)
log = logging.getLogger(__name__)


def scrubbed(text: str) -> str:
    """`text` with URL passwords masked and every secret-named variable's value removed."""
    for name, value in os.environ.items():
        if value and len(value) >= 6 and SECRET_NAMES.search(name) and value in text:
            text = text.replace(value, f"<{name}>")
    return URL_PASSWORD.sub(r"\g<head>***@", text)


def alert_text(run_id: str, state: str, detail: str, command: str = "") -> str:
    what = f"claidex run {run_id}: {state}: {detail}"
    return scrubbed(f"{what}\n{command}" if command else what)


def send_alert(run_id: str, state: str, detail: str, command: str = "") -> bool:
    """POST the message when a webhook is set; True when it was delivered. Attempts with a
    short backoff until `alert_timeout` s have passed; a dead endpoint costs no more."""
    url = os.environ.get(WEBHOOK, "").strip()
    if not url:
        return False
    body = json.dumps({"text": alert_text(run_id, state, detail, command)}).encode()
    deadline = time.monotonic() + load_settings().alert_timeout
    pause = 0.2
    while (left := deadline - time.monotonic()) > 0:
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=left) as response:
                if 200 <= response.status < 300:
                    return True
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("alert for run %s not delivered: %s", run_id, scrubbed(str(exc)))
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause *= 2
    return False
