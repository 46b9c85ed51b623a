"""A report page opened in Debian's headless chromium through playwright: what it requested,
what each section drew, every number's data-key, and a full-page screenshot."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"

# per section: its charts' size and how many drawn shapes (paths, rects, text) each holds
SECTIONS_JS = """
() => [...document.querySelectorAll('section')].map(s => ({
  id: s.id,
  charts: [...s.querySelectorAll('.chart svg')].map(svg => {
    const box = svg.getBoundingClientRect();
    return {width: box.width, height: box.height,
            shapes: svg.querySelectorAll('path, rect, use').length,
            texts: svg.querySelectorAll('text').length};
  }),
}))
"""
NUMBERS_JS = """
() => [...document.querySelectorAll('[data-key]')].map(e => [e.dataset.key, e.textContent])
"""


@dataclass(frozen=True)
class PageCapture:
    requests: list[str]  # every URL the page asked for, the page itself included
    blocked: list[str]  # those that were not the page's own file
    sections: list[dict[str, Any]]
    numbers: list[tuple[list[Any], str]]
    console_errors: list[str]


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which("chromium") is not None


def capture(page_file: Path, screenshot: Path) -> PageCapture:
    """Open `page_file` offline (every non-file request is aborted and recorded), screenshot it."""
    from playwright.sync_api import sync_playwright

    url = page_file.resolve().as_uri()
    requests: list[str] = []
    blocked: list[str] = []
    errors: list[str] = []

    def route(r: Any) -> None:
        requests.append(r.request.url)
        if r.request.url == url:
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--proxy-server=http://127.0.0.1:9"],  # no way out either
        )
        try:
            context = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)
            page = context.new_page()
            page.route("**/*", route)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url, wait_until="load")
            sections = page.evaluate(SECTIONS_JS)
            numbers = [(json.loads(k), text) for k, text in page.evaluate(NUMBERS_JS)]
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return PageCapture(requests, blocked, sections, numbers, errors)
