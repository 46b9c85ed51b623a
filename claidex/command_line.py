"""What the three command lines share (`claidex`, `python -m workers`, `python -m modal_burst`):
the `--graph` flag, and how a known failure becomes one `error: ...` line and exit code 2.

Its own module so that no command line imports another: each engine's CLI imports this,
never `claidex.cli` (tests/test_import_rules.py)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import get_args

import polars as pl
import psycopg

from scoring.config import GraphMode
from scoring.errors import ClaidexError

# a run held by its checks before publish: neither a failure (1) nor bad input (2); every
# command line's code for `blocked`
BLOCKED_EXIT = 3


def add_graph_flag(parser: argparse.ArgumentParser) -> None:
    """`--graph MODE` on every run command (default CLAIDEX_GRAPH_MODE, else embedded)."""
    parser.add_argument(
        "--graph",
        choices=list(get_args(GraphMode)),
        default=None,
        help="ownership graph mode (default: CLAIDEX_GRAPH_MODE or embedded)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Run a parsed command; known failures become one `error: ...` line and exit code 2."""
    try:
        return int(args.func(args))
    except ClaidexError as exc:
        error_line(str(exc))
        return 2
    except OSError as exc:  # storage: a full disk, a vanished mount, a permission
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        error_line(f"{where}{exc.strerror or exc}")
        return 2
    except pl.exceptions.PolarsError as exc:  # a file of the wrong shape given to compare, say
        error_line(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
        return 2
    except psycopg.Error as exc:  # e.g. a schema that `claidex db init` has not created yet
        from scoring.db.connection import database_error, database_url

        error_line(database_error(exc, database_url() or "", args.command))
        return 2


def error_line(message: str) -> None:
    """`error: ...` as one line whatever the message holds (a path with a newline in its
    name, a multi-line library error): line breaks shown as \\n."""
    shown = message.strip().replace("\r", "\\r").replace("\n", "\\n")
    print(f"error: {shown}", file=sys.stderr)


# The neo4j driver logs each dropped connection at ERROR before raising; with no handler,
# Python's last-resort handler printed it beside the CLI's one-line error (we retry and
# report every failure ourselves). Module level: the spawned pool children import this too
# (through claidex.cli), as do the `workers` and `modal_burst` command lines.
# Workers and Modal containers keep the driver's log (their root handler records it).
logging.getLogger("neo4j").addHandler(logging.NullHandler())
