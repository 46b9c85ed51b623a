"""Which Modal secrets a run needs: decided by the run's own settings, never the caller's.

A new run freezes the caller's secret names (CLAIDEX_MODAL_POSTGRES_SECRET,
CLAIDEX_MODAL_NEO4J_SECRET) into its run.json with the rest of its settings; `resume`,
`merge` and `full --run-id` attach the names recorded there.

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
from scoring.errors import ClaidexError, RunStateError
from scoring.location import is_url

STEPS = (
    "prepare",
    "stage_shard",
    "stage_single",
    "score_batch",
    "merge_and_calibrate",
)
PREPARE_STEPS = STEPS[:3]  # the plan, then the stages: before run.json exists
# a single prepare step reads the graph (a snapshot copies it, live mode checks it can) and
# in live mode batches ask it
NEO4J_STEPS = {"neo4j-snapshot": ("stage_single",), "neo4j-live": ("stage_single", "score_batch")}
POSTGRES_KEYS = "DATABASE_URL=postgresql://USER:PASSWORD@HOST:5432/DBNAME"
NEO4J_KEYS = "NEO4J_URI=neo4j+s://HOST NEO4J_USER=neo4j NEO4J_PASSWORD=PASSWORD"
POSTGRES_NAME, NEO4J_NAME = "modal_postgres_secret", "modal_neo4j_secret"  # Settings fields
S3_NAME = "modal_s3_secret"
S3_KEYS = "AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... AWS_REGION=... [AWS_ENDPOINT_URL=...]"
S3_REQUIRED = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
POSTGRES_KEYS_NAME = "modal_postgres_keys"
NEO4J_REQUIRED = ("NEO4J_URI",)  # user and password have defaults or aliases
# what scoring.db.connection.database_url accepts: a URL, or libpq finding the server itself
DATABASE_KEYS = ("DATABASE_URL", "PGHOST", "PGDATABASE", "PGSERVICE")


class MissingSecretError(ClaidexError):
    """A secret this run needs is not in the Modal workspace."""


def secret_names(cfg: Settings) -> dict[str, str]:
    """The secret names (and the keys the Postgres one holds) of `cfg` as run settings: a
    new run freezes them into its run.json, so run_full in a container asks for the same."""
    return {
        POSTGRES_NAME: cfg.modal_postgres_secret,
        NEO4J_NAME: cfg.modal_neo4j_secret,
        POSTGRES_KEYS_NAME: cfg.modal_postgres_keys,
        S3_NAME: cfg.modal_s3_secret,
    }


def uses_object_store(data: object) -> bool:
    """The run root (CLAIDEX_MODAL_RUN_ROOT, the App's) or the dataset is on S3."""
    return is_url(Settings().modal_run_root) or is_url(data)


def postgres_keys(text: str) -> tuple[str, ...]:
    """`DATABASE_URL` or `PGHOST,PGUSER,...`: the keys a Postgres secret must hold; a list
    that gives the functions no database at all is refused (a publish would find none)."""
    keys = tuple(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    if not any(key in DATABASE_KEYS for key in keys):
        msg = (
            f"CLAIDEX_MODAL_POSTGRES_KEYS={text!r} names no key that reaches a database: "
            f"include one of {', '.join(DATABASE_KEYS)}"
        )
        raise RunStateError(msg)
    return keys


def _default(name: str) -> str:
    return str(Settings.model_fields[name].default)


@dataclass(frozen=True)
class RunNeeds:
    """What a run touches outside the volume: its graph mode, Postgres as source, a publish,
    and the names of the secrets that reach them (the run's own, never the caller's)."""

    graph_mode: str = "embedded"
    reads_postgres: bool = False  # --source postgres: prepare and export shards read it
    publishes: bool = True
    postgres_secret: str = _default(POSTGRES_NAME)
    neo4j_secret: str = _default(NEO4J_NAME)
    postgres_keys: str = _default(POSTGRES_KEYS_NAME)
    s3_secret: str = ""  # the run's S3 credentials (every step), when it uses S3

    @classmethod
    def of_request(
        cls, overrides: dict[str, Any], source: str, publish: bool, data_name: str = ""
    ) -> RunNeeds:
        """A run about to be prepared: its frozen settings (CLAIDEX_* and flags) and source."""
        s3 = str(overrides.get(S3_NAME) or _default(S3_NAME))
        return cls(
            str(overrides.get("graph_mode") or "embedded"),
            reads_postgres=source == "postgres",
            publishes=publish,
            postgres_secret=str(overrides.get(POSTGRES_NAME) or _default(POSTGRES_NAME)),
            neo4j_secret=str(overrides.get(NEO4J_NAME) or _default(NEO4J_NAME)),
            postgres_keys=str(overrides.get(POSTGRES_KEYS_NAME) or _default(POSTGRES_KEYS_NAME)),
            s3_secret=s3 if uses_object_store(data_name) else "",
        )

    @classmethod
    def of_run(cls, state: dict[str, Any], *, publish: bool | None) -> RunNeeds:
        """A planned or prepared run, from its plan or run.json and ledger (`run_status`):
        the graph mode, secret names and publish choice it started with, unless `publish`
        overrides the latter. Postgres as a source matters only until prepare is over (the
        export stage's shards read it).

        A ledger without the choice (prepare stopped between writing run.json and recording
        it) is refused: guessing 'publish' would write to Postgres for a --no-publish run."""
        if publish is None and "publish" not in state:
            msg = (
                f"run {state.get('run_id')}: its ledger does not record whether it publishes "
                "(prepare stopped before recording the choice): pass --publish or --no-publish"
            )
            raise RunStateError(msg)
        chosen = state["publish"] if publish is None else publish
        return cls(
            str(state.get("graph_mode") or "embedded"),
            reads_postgres=state.get("plan_source") == "postgres" and not state.get("prepared"),
            publishes=bool(chosen),
            postgres_secret=str(state.get("postgres_secret") or _default(POSTGRES_NAME)),
            neo4j_secret=str(state.get("neo4j_secret") or _default(NEO4J_NAME)),
            # a run from before the keys were recorded: the caller's setting
            postgres_keys=str(state.get("postgres_keys") or Settings().modal_postgres_keys),
            s3_secret=str(state.get("s3_secret") or _default(S3_NAME))
            if uses_object_store(state.get("source"))
            else "",
        )


@dataclass(frozen=True)
class SecretUse:
    """One secret a step needs, why, and the keys `modal secret create` should give it."""

    name: str
    why: str
    keys: str
    required: tuple[str, ...] = ()  # Modal checks the secret holds these when it is looked up

    def missing(self) -> str:
        holds = f" or lacks {', '.join(self.required)}" if self.required else ""
        other = (
            "; a secret with libpq's PGHOST, PGUSER, ... instead: set CLAIDEX_MODAL_POSTGRES_KEYS"
            if self.keys == POSTGRES_KEYS
            else ""
        )
        return (
            f"Modal secret {self.name!r} not found{holds} ({self.why}): create it with "
            f"`modal secret create {self.name} {self.keys}` (add --force to replace it){other}"
        )


def secret_uses(needs: RunNeeds) -> dict[str, list[SecretUse]]:
    """Each step's secrets: Postgres to export (prepare) and to publish (merge), Neo4j where
    the graph mode reads it (snapshot: reduce; live: reduce and every batch)."""
    uses: dict[str, list[SecretUse]] = {step: [] for step in STEPS}
    postgres = needs.postgres_secret
    required = postgres_keys(needs.postgres_keys)
    if needs.reads_postgres:  # the graph tables at prepare, an NPI range per export shard
        why = "--source postgres reads Postgres"
        uses["prepare"].append(SecretUse(postgres, why, POSTGRES_KEYS, required))
        uses["stage_shard"].append(SecretUse(postgres, why, POSTGRES_KEYS, required))
    if needs.publishes:
        why = "the run publishes to Postgres; --no-publish needs no database"
        uses["merge_and_calibrate"].append(SecretUse(postgres, why, POSTGRES_KEYS, required))
    why = f"graph mode {needs.graph_mode} reads Neo4j"
    for step in NEO4J_STEPS.get(needs.graph_mode, ()):
        uses[step].append(SecretUse(needs.neo4j_secret, why, NEO4J_KEYS, NEO4J_REQUIRED))
    if needs.s3_secret:  # first: with_options replaces what a function declares
        why = "the run root or the dataset is on S3"
        for step in STEPS:
            uses[step].insert(0, SecretUse(needs.s3_secret, why, S3_KEYS, S3_REQUIRED))
    return uses
