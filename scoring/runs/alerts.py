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
import threading
import time
import urllib.error
import urllib.request

from scoring.config import load_settings

WEBHOOK = "CLAIDEX_ALERT_WEBHOOK"
SECRET_NAMES = re.compile(
    r"(PASSWORD|SECRET|TOKEN|_KEY$|URL$|URI$|WEBHOOK$|PUSHGATEWAY$|DSN$)", re.IGNORECASE
)
# user:password@ in a URL (the password up to the last @ of the authority), and libpq's
# keyword form password=...
URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^/\s]*@", re.IGNORECASE)
KEYWORD_PASSWORD = re.compile(r"(?P<head>password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)
log = logging.getLogger(__name__)


def scrubbed(text: str) -> str:
    """`text` with URL passwords masked and every secret-named variable's value removed."""
    for name, value in os.environ.items():
        if value and len(value) >= 6 and SECRET_NAMES.search(name) and value in text:
            text = text.replace(value, f"<{name}>")
    text = URL_PASSWORD.sub(r"\g<head>***@", text)
    return KEYWORD_PASSWORD.sub(r"\g<head>***", text)


def alert_text(run_id: str, state: str, detail: str, command: str = "") -> str:
    what = f"claidex run {run_id}: {state}: {detail}"
    return scrubbed(f"{what}\n{command}" if command else what)


def send_alert(run_id: str, state: str, detail: str, command: str = "") -> bool:
    """POST the message when a webhook is set; True when it was delivered. Attempts, with a
    short backoff, run in a daemon thread this call waits for at most `alert_timeout` s in
    all (a socket timeout bounds each read, not a reply trickled byte by byte, nor a name
    lookup); whatever the endpoint does, this never raises."""
    url = os.environ.get(WEBHOOK, "").strip()
    if not url:
        return False
    try:
        body = json.dumps({"text": alert_text(run_id, state, detail, command)}).encode()
        budget = load_settings().alert_timeout
    except Exception:
        log.exception("alert for run %s not built", run_id)
        return False
    deadline = time.monotonic() + budget
    delivered = threading.Event()
    thread = threading.Thread(
        target=_deliver, args=(url, body, deadline, delivered, run_id), daemon=True
    )
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()))
    return delivered.is_set()


def _deliver(
    url: str, body: bytes, deadline: float, delivered: threading.Event, run_id: str
) -> None:
    pause = 0.2
    while (left := deadline - time.monotonic()) > 0:
        request = urllib.request.Request(
            url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=left) as response:
                if 200 <= response.status < 300:
                    delivered.set()
                    return
        except Exception as exc:
            log.warning("alert for run %s not delivered: %s", run_id, scrubbed(str(exc)))
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause *= 2
