"""A run's JSON files as text and back, one way for every store: a torn or foreign file is
one RunFileError naming where it lies (a path, a URL, a key on the Modal volume)."""

from __future__ import annotations

import json
from typing import Any

from scoring.errors import RunFileError


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, default=str) + "\n"  # keeps ranked order


def parse_json(raw: bytes | str, where: str) -> Any:
    """JSON of a run file, or one RunFileError naming it instead of a JSONDecodeError."""
    try:
        return json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        msg = f"{where}: not valid JSON ({exc}): a torn write or another program's file"
        raise RunFileError(msg) from None


def parse_record(raw: bytes | str, where: str) -> dict[str, Any]:
    """A run record's JSON object (ledger, run.json, a batch record)."""
    data = parse_json(raw, where)
    if not isinstance(data, dict):
        msg = f"{where}: not a JSON object ({type(data).__name__}): another program's file?"
        raise RunFileError(msg)
    return data
