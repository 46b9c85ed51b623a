"""Make docs/report-screenshot.png: a sample run's report.html in headless chromium, with a
previous published run to compare against (README links it).

    .venv/bin/python ops/report_screenshot.py [--providers 20000] [--out docs/report-screenshot.png]

Generates a sample dataset, runs it (run "last-week"), publishes it to a private Postgres,
runs the next week's copy of the data (claidex.dev.sample.next_week), and screenshots that
run's report. Needs Debian's chromium (ops/services.sh installs it) and the dev extras.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from claidex.dev.sample import generate, next_week  # noqa: E402
from claidex.local_engine import run_local  # noqa: E402
from scoring.config import Settings  # noqa: E402
from scoring.db.connection import connect  # noqa: E402
from scoring.db.schema import init_schema  # noqa: E402
from scoring.stages.publish import publish  # noqa: E402
from tests.browser import capture  # noqa: E402
from tests.devservices import PrivatePostgres  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--providers", type=int, default=20_000)
    parser.add_argument("--out", default=str(ROOT / "docs" / "report-screenshot.png"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="claidex-shot-") as folder:
        base = Path(folder)
        generate(base / "data", providers=args.providers, seed=7)
        next_week(base / "data", base / "data-next")
        cfg = Settings(batch_size=2_000, shards=2, workers=2)  # a timeline with two lanes
        server = PrivatePostgres().start()
        try:
            with connect(server.url) as conn:
                init_schema(conn)
            last = run_local(base / "data", cfg, run_dir=base / "runs" / "last-week",
                             show_progress=False)  # fmt: skip
            publish(last, server.url, outage_window=0)
        finally:
            server.stop()
        run = run_local(base / "data-next", cfg, run_dir=base / "runs" / "this-week",
                        show_progress=False)  # fmt: skip
        page = capture(run.report_html, Path(args.out))
        if page.blocked:
            raise SystemExit(f"the page asked the network for {page.blocked}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
