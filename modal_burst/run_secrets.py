"""Which Modal secrets a run needs: decided by the run's own settings, never the caller's.

The App's functions declare no secrets, because Modal looks up every secret an App names
when the App starts (`modal/runner.py::_create_all_objects`), so one missing secret
would stop every command. The driver attaches each step's secrets per call instead
(`Function.with_options(secrets=...)`, `modal/_functions.py`). It looks each secret up
before the first step runs, so a missing one fails in one line that names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from scoring.config import Settings
from scoring.errors import ClaidexError

STEPS = ("prepare", "score_batch", "merge_and_calibrate")
NEO4J_STEPS = {"neo4j-snapshot": ("prepare",), "neo4j-live": ("prepare", "score_batch")}
POSTGRES_KEYS = "DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME"
NEO4J_KEYS = "NEO4J_URI=neo4j+s://HOST NEO4J_USER=neo4j NEO4J_PASSWORD=PASSWORD"


class MissingSecretError(ClaidexError):
    """A secret this run needs is not in the Modal workspace."""


@dataclass(frozen=True)
class RunNeeds:
    """What a run touches outside the volume: its graph mode, Postgres as source, a publish."""

    graph_mode: str = "embedded"
    reads_postgres: bool = False  # --source postgres: prepare exports a snapshot
    publishes: bool = True

    @classmethod
    def of_request(cls, overrides: dict[str, Any], source: str, publish: bool) -> RunNeeds:
        """A run about to be prepared: its frozen settings (CLAIDEX_* and flags) and source."""
        graph_mode = str(overrides.get("graph_mode") or "embedded")
        return cls(graph_mode, reads_postgres=source == "postgres", publishes=publish)

    @classmethod
    def of_run(cls, state: dict[str, Any], *, publish: bool | None) -> RunNeeds:
        """A prepared run, from its run.json and ledger (`run_status`): the graph mode and the
        publish choice it started with, unless `publish` overrides the latter. Prepare is over,
        so Postgres as a source no longer matters."""
        chosen = state.get("publish", True) if publish is None else publish
        return cls(str(state.get("graph_mode") or "embedded"), publishes=bool(chosen))


@dataclass(frozen=True)
class SecretUse:
    """One secret a step needs, why, and the keys `modal secret create` should give it."""

    name: str
    why: str
    keys: str

    def missing(self) -> str:
        return (
            f"Modal secret {self.name!r} not found ({self.why}): create it with "
            f"`modal secret create {self.name} {self.keys}`"
        )


def secret_uses(needs: RunNeeds, cfg: Settings) -> dict[str, list[SecretUse]]:
    """Each step's secrets: Postgres to export (prepare) and to publish (merge), Neo4j where
    the graph mode reads it (snapshot: prepare; live: prepare and every batch)."""
    uses: dict[str, list[SecretUse]] = {step: [] for step in STEPS}
    postgres = cfg.modal_postgres_secret
    if needs.reads_postgres:
        why = "--source postgres reads Postgres"
        uses["prepare"].append(SecretUse(postgres, why, POSTGRES_KEYS))
    if needs.publishes:
        why = "the run publishes to Postgres; --no-publish needs no database"
        uses["merge_and_calibrate"].append(SecretUse(postgres, why, POSTGRES_KEYS))
    why = f"graph mode {needs.graph_mode} reads Neo4j"
    for step in NEO4J_STEPS.get(needs.graph_mode, ()):
        uses[step].append(SecretUse(cfg.modal_neo4j_secret, why, NEO4J_KEYS))
    return uses
