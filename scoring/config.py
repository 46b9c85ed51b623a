"""The one settings object: every methodology constant and engine setting, env-overridable.

Environment variables use the prefix ``CLAIDEX_`` (``CLAIDEX_BATCH_SIZE=50000``).
A run freezes its settings into the run directory at ``prepare`` so that every
worker scores the run with the same constants, whatever its own environment.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as PydanticSettingsError

from scoring.errors import ClaidexError

METHODOLOGY_VERSION = "v1"
GraphMode = Literal["embedded", "neo4j-snapshot", "neo4j-live"]
FullEngine = Literal["celery", "modal"]
LABELS = ("High", "Elevated", "Moderate", "Low")  # risk_label values, highest first


# One row's amount in micro-units at most: Int128 (1.7e38) holds the sum of 1e14 such rows.
MAX_MICROS = 10**24
# the command-line options that set a field, for messages (the rest: variables only)
OPTIONS = {
    "batch_size": "--batch-size",
    "shards": "--shards",
    "workers": "--workers",
    "as_of_year": "--as-of-year",
    "graph_mode": "--graph",
}


class SettingsError(ClaidexError, ValueError):
    """A setting (a CLAIDEX_* variable or a command-line option) out of its range."""


def describe_invalid(exc: ValidationError, given: dict[str, Any]) -> str:
    """pydantic's report as one line: each field as its variable (and option), the reason
    and the value; no newline of a value survives."""
    parts = []
    for error in exc.errors(include_url=False):
        field = str(error["loc"][0]) if error.get("loc") else ""
        reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if not field:  # a rule over several settings: its message names them
            parts.append(reason)
            continue
        names = f"CLAIDEX_{field.upper()}"
        if field in OPTIONS:
            names = f"{OPTIONS[field]} / {names}"
        value = given.get(field, error.get("input"))
        parts.append(f"{names}: {reason} (got {value!r})")
    text = "; ".join(parts) or "invalid settings"
    return "invalid setting: " + text.replace("\n", "\\n").replace("\r", "\\r")


SHARDS_HELP = "shards of each prepare stage (default: one per `shard_rows`, 3 M, payment rows)"


class Settings(BaseSettings):
    """Methodology v1 constants (SPEC §4) and engine settings."""

    model_config = SettingsConfigDict(env_prefix="CLAIDEX_", frozen=True, extra="ignore")

    # --- composite weights -------------------------------------------------
    weight_billing: float = 0.30
    weight_ownership: float = 0.25
    weight_trajectory: float = 0.20
    weight_exclusion: float = 0.15
    weight_concentration: float = 0.10
    # weights of components registered beyond SPEC's five without a field of their own
    # (scoring.methodology.registry), by weight name: CLAIDEX_COMPONENT_WEIGHTS='{"toy": 0.0}'
    component_weights: dict[str, float] = Field(default_factory=dict)

    # --- peer statistics ---------------------------------------------------
    alpha: float = 0.7  # year decay: w_t = alpha ** (T - year)
    eps: float = 1.0  # x_k = ln(m_k + eps)
    mad_scale: float = 1.4826
    mad_floor: float = 1e-9
    z_cap: float = 5.0
    peer_min_claims: float = 100.0  # eligible peer provider-year
    peer_min_group_size: int = 50  # primary group used from this many eligible members
    window_years: int = 5
    # T is the latest year in which at least this share of the busiest year's distinct NPIs
    # bill: a few stray rows dated later never move the window for everyone.
    window_end_min_share: float = Field(default=0.5, gt=0, le=1)
    concentration_years: int = 3
    concentration_threshold: float = 0.5
    ownership_max_hops: int = 5
    logistic_scale: float = 2.0  # S = 100 / (1 + exp(-z / logistic_scale))

    # --- exclusion proximity -----------------------------------------------
    exclusion_direct_score: float = 100.0
    exclusion_owner_score: float = 80.0
    exclusion_chain_score: float = 50.0

    # --- labels and flags --------------------------------------------------
    label_high: float = 80.0
    label_elevated: float = 60.0
    label_moderate: float = 30.0
    flag_billing_percentile: float = 95.0
    flag_growth_billing_score: float = 80.0
    flag_growth_trajectory_score: float = 60.0
    flag_ownership_score: float = 50.0
    flag_concentration_score: float = 60.0
    flag_exclusion_score: float = 80.0

    # --- input validation --------------------------------------------------
    # years are Int32 in the pipeline: a limit past 9999 would let a year through that the
    # cast cannot hold
    min_valid_year: int = Field(default=1990, ge=1, le=9999)
    max_valid_year: int = Field(default=2100, ge=1, le=9999)
    unknown_value: str = "Unknown"
    amount_scale: int = 1_000_000  # amounts are summed exactly in 1e-6 units
    # larger amounts are quarantined: finite, and at most MAX_MICROS micro-units a row, so
    # the exact Int128 sums of any input's rows cannot overflow (scoring.methodology.amounts)
    max_amount: float = Field(default=1e12, gt=0, allow_inf_nan=False)
    validation_chunk_rows: int = Field(default=4_000_000, ge=1)  # payment rows checked at a time
    taxonomy_prefix_len: int = 10

    # --- run / engine ------------------------------------------------------
    as_of_year: int | None = None
    batch_size: int = Field(default=250_000, ge=1)
    # S = B = G: input slices, NPI buckets and peer buckets of a full run's stages.
    # 0: one shard per `shard_rows` payment rows (measured: a shard task of 2.85 M rows
    # peaks at 1.3 GB, docs/BENCHMARKS.md), frozen into the run's plan.
    shards: int = Field(default=0, ge=0, le=4096)
    shard_rows: int = Field(default=3_000_000, ge=1)
    # a one-shard run fuses its stages (ingest -> count -> reduce -> aggregate -> peer_stats in
    # one task, the rows in memory): the same files as the stages, minus the shuffles' files
    fuse: bool = True
    # stage files live one run: lz4 is the fastest with polars' writer (a seed shard's
    # payments 0.46 s against 0.8 s uncompressed: fewer bytes); zstd for a slow volume
    stage_compression: Literal["none", "lz4", "zstd"] = "lz4"
    # merge draws report.html beside report.json (~0.6 s a run, ~2 s with matplotlib's
    # import in a fresh process); off, `claidex report RUN` draws it when asked
    report_html: bool = True
    # local engine processes; 0: one per core once the plan has two or more shards (3 M+
    # payment rows: seed 68 -> 52 s on 2 cores), else the run stays in this process
    workers: int = Field(default=0, ge=0)
    # a directory, or s3://bucket/prefix (credentials: the standard AWS variables only)
    run_root: Path | str = Path("runs")
    # seconds an object-store request retries a restarted or unreachable S3 server
    s3_outage_window: float = Field(default=60.0, ge=0)
    graph_mode: GraphMode = "embedded"

    # --- checks before publish (docs in README "Checks before publish") --------
    # each against the run on the table; a check over its limit blocks the publish
    checks: bool = True  # off: a run publishes unchecked (the ledger says so)
    check_program_min_share: float = Field(default=0.01, ge=0, le=1)  # programs this big ...
    check_program_max_loss: float = Field(default=0.5, gt=0, le=1)  # ... may lose this share
    check_rows_max_change: float = Field(default=0.2, gt=0)  # valid payment rows, relative
    check_year_min_share: float = Field(default=0.01, ge=0, le=1)  # years this big ...
    check_year_max_loss: float = Field(default=0.5, gt=0, le=1)  # ... may lose this share
    check_quarantine_max_rise: float = Field(default=0.02, gt=0, le=1)  # share points
    check_quarantine_min_rows: int = Field(default=100, ge=0)  # fewer quarantined rows: a warning
    check_population_max_change: float = Field(default=0.05, gt=0)  # scored providers
    check_npis_changed_warn: float = Field(default=0.05, gt=0)  # added or removed: a warning
    check_label_churn_max: float = Field(default=0.15, gt=0, le=1)  # label changed
    check_movers_points: float = Field(default=20.0, gt=0)  # a risk_score move this big ...
    check_movers_max: float = Field(default=0.10, gt=0, le=1)  # ... for at most this share
    check_peer_taxonomy_max: float = Field(default=0.05, gt=0, le=1)  # providers regrouped
    check_component_mean_max: float = Field(default=5.0, gt=0)  # points, each component
    check_component_p90_max: float = Field(default=10.0, gt=0)  # points, each component
    accepted_by: str | None = None  # who `publish --accept` records (unset: the OS user)

    # --- alerts and metrics (CLAIDEX_ALERT_WEBHOOK and CLAIDEX_PUSHGATEWAY are read from the
    # environment when used, never frozen into a run: a webhook URL is a credential) ---
    alert_timeout: float = Field(default=5.0, gt=0)  # s, every delivery attempt together

    # --- Postgres ------------------------------------------------------------
    db_lock_timeout: float = Field(default=3.0, gt=0)  # s; db init never queues long behind readers

    # --- Celery fleet (broker/backend URLs are secrets: read from the environment) ---
    visibility_timeout: int = Field(default=3600, ge=1)  # > longest task; redelivery after
    task_soft_time_limit: int = Field(default=1800, ge=1)
    task_time_limit: int = Field(default=2100, ge=1)
    # a pool child whose peak RSS passed this after a task is replaced (Celery's
    # worker_max_memory_per_child; the new child comes within Celery's 5 s pool timer):
    # a population step (combine, merge: 4-6 GB at 5x seed) leaves no such heap behind for
    # the next task. A child below the limit keeps its heap. 0: never.
    worker_max_memory_mb: int = Field(default=3000, ge=0)
    task_max_retries: int = Field(default=3, ge=0)
    batch_max_attempts: int = Field(default=4, ge=1)  # worker deaths on one batch before it fails
    # worker deaths on one step (prepare, a stage shard, reduce, combine, merge) before it fails
    step_max_attempts: int = Field(default=3, ge=1)
    retry_backoff_max: int = Field(default=300, ge=1)
    # Leases (start, merge) last this long without renewal: a killed holder is replaced after it.
    lease_seconds: float = Field(default=30.0, ge=1)
    db_outage_window: float = Field(default=900.0, ge=0)  # s a publish/export retries a dead DB
    heartbeat_seconds: float = Field(default=5.0, gt=0)  # a running step touches its heartbeat
    worker_silence_seconds: float = Field(default=60.0, gt=0)  # silent this long: worker lost
    stall_seconds: float = Field(default=120.0, gt=0)  # no progress and nothing alive: stalled
    watchdog_interval: float = Field(default=30.0, gt=0)  # beat checks unfinished runs this often
    watchdog_max_resumes: int = Field(default=3, ge=0)  # automatic resumes before failing a run
    follow_timeout: float = Field(default=6 * 3600.0, gt=0)  # CLI follower gives up after this
    allow_empty_graph: bool = False  # a Neo4j mode may score with an empty graph (ownership 0)
    full_schedule: str = "0 3 * * 0"  # weekly full recompute (crontab, or seconds)
    refresh_schedule: str = "0 4 * * *"  # daily refresh of changed NPIs (crontab, or seconds)
    # dataset for scheduled runs (a directory or s3://bucket/prefix); unset: Postgres
    scheduled_data: Path | str | None = None
    graph_load_batch: int = Field(default=10_000, ge=1)  # rows per UNWIND when loading Neo4j
    neo4j_connect_timeout: float = Field(default=10.0, gt=0)
    neo4j_retry_seconds: float = Field(default=30.0, ge=0)  # managed-transaction retries
    neo4j_live_attempts: int = Field(default=4, ge=1)  # per batch, when the server is gone
    neo4j_retry_backoff: float = Field(default=2.0, ge=0)  # seconds, doubled per attempt
    neo4j_outage_window: float = Field(default=60.0, ge=0)  # s prepare waits for Neo4j back
    full_engine: FullEngine = "celery"  # who runs beat's weekly full recompute

    # --- Modal burst (credentials: `modal token new` or MODAL_TOKEN_ID/MODAL_TOKEN_SECRET) ---
    modal_app_name: str = "claidex-burst"
    modal_volume: str = "claidex-data"
    modal_mount: Path = Path("/data")  # where functions see the volume
    # runs on S3 instead of the volume's runs/ (s3://bucket/prefix); its credentials come
    # from the Modal secret modal_s3_secret, which every function then carries
    modal_run_root: str = ""
    modal_s3_secret: str = "claidex-s3"  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...
    modal_data_name: str = "claidex"  # dataset under <volume>/datasets/ for scheduled runs
    # what a scheduled burst reads; unset: what the fleet's scheduled run reads (Postgres when
    # a database is configured); "volume" (last uploaded dataset) only when chosen
    modal_source: Literal["volume", "postgres"] | None = None
    modal_batch_size: int = Field(default=6_000, ge=1)  # ~300 batches at seed scale
    modal_max_containers: int = Field(default=300, ge=1)
    # inputs per `.map` call: Modal runs at most 1,000 of one map at once and keeps at most
    # 2,000 pending per function (modal_burst/limits.py)
    modal_map_window: int = Field(default=1_000, ge=1, le=1_000)
    # a burst's shards (unless --shards): smaller than a machine's, the critical path is
    # the slowest shard of each stage (~64 shards at seed scale)
    modal_shard_rows: int = Field(default=750_000, ge=1)
    modal_retries: int = Field(default=3, ge=0)
    modal_batch_timeout: int = Field(default=900, ge=10)  # legacy: 15 min
    modal_batch_memory: int = Field(default=4_096, ge=512)  # MiB; legacy: 4 GB
    modal_batch_cpu: float = Field(default=1.0, gt=0)  # cores reserved per batch container
    modal_step_cpu: float = Field(default=2.0, gt=0)  # prepare and merge (as benchmarked)
    modal_prepare_timeout: int = Field(default=3_600, ge=10)
    modal_prepare_memory: int = Field(default=16_384, ge=512)  # whole-population statistics
    modal_stage_timeout: int = Field(default=1_800, ge=10)  # one prepare-stage shard
    modal_stage_memory: int = Field(default=4_096, ge=512)  # MiB; a shard, not the population
    modal_merge_timeout: int = Field(default=1_800, ge=10)
    modal_merge_memory: int = Field(default=16_384, ge=512)  # every chunk plus the publish
    modal_driver_timeout: int = Field(default=4 * 3_600, ge=60)  # a deployed run_full end to end
    modal_postgres_secret: str = "claidex-postgres"  # holds DATABASE_URL
    # the keys that secret must hold (checked by Modal when it is looked up): DATABASE_URL, or
    # libpq's variables, e.g. "PGHOST,PGDATABASE,PGUSER,PGPASSWORD"
    modal_postgres_keys: str = "DATABASE_URL"
    modal_neo4j_secret: str = "claidex-neo4j"  # NEO4J_URI/USER/PASSWORD (Neo4j graph modes)

    def __hash__(self) -> int:
        """Hashable like any frozen model, the component_weights mapping included."""
        return hash(json.dumps(self.model_dump(mode="json"), sort_keys=True))

    @field_validator("run_root", "scheduled_data", mode="after")
    @classmethod
    def _run_root_location(cls, value: Path | str | None) -> Path | str | None:
        """An s3:// URL stays a string (a Path would fold its '//'); anything else a Path."""
        if value is None:
            return None
        text = str(value)
        return text.rstrip("/") if text.startswith("s3://") else Path(text)

    def __init__(self, **values: Any) -> None:
        """A setting out of range is one SettingsError line naming the variable (and the
        option, where a command line has one), never pydantic's multi-line report."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(describe_invalid(exc, values)) from None
        except PydanticSettingsError as exc:  # a variable that does not parse (bad JSON)
            first = (str(exc).strip().splitlines() or ["invalid"])[0]
            field = first.split('"')[1] if first.count('"') >= 2 else ""
            name = f"CLAIDEX_{field.upper()}: " if field else ""
            raise SettingsError(f"invalid setting: {name}{first}") from None

    @model_validator(mode="after")
    def _amounts_and_years(self) -> Settings:
        if self.max_amount * self.amount_scale > MAX_MICROS:
            msg = (
                f"CLAIDEX_MAX_AMOUNT x CLAIDEX_AMOUNT_SCALE ({self.max_amount:g} x "
                f"{self.amount_scale}) must be at most {MAX_MICROS:.0e} micro-units, or exact "
                "sums of many rows could overflow"
            )
            raise ValueError(msg)
        if self.min_valid_year > self.max_valid_year:
            msg = (
                f"CLAIDEX_MIN_VALID_YEAR ({self.min_valid_year}) is above "
                f"CLAIDEX_MAX_VALID_YEAR ({self.max_valid_year})"
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _redelivery_after_time_limit(self) -> Settings:
        """The broker must not hand a task to a second worker while the first may still run it."""
        if self.visibility_timeout <= self.task_time_limit:
            msg = (
                f"CLAIDEX_VISIBILITY_TIMEOUT ({self.visibility_timeout} s) must exceed "
                f"CLAIDEX_TASK_TIME_LIMIT ({self.task_time_limit} s), or a running task is "
                "redelivered to a second worker"
            )
            raise ValueError(msg)
        if not self.heartbeat_seconds < self.worker_silence_seconds:
            msg = (
                "CLAIDEX_HEARTBEAT_SECONDS must be below CLAIDEX_WORKER_SILENCE_SECONDS, "
                "or a live worker looks lost"
            )
            raise ValueError(msg)
        if self.task_soft_time_limit >= self.task_time_limit:
            msg = "CLAIDEX_TASK_SOFT_TIME_LIMIT must be below CLAIDEX_TASK_TIME_LIMIT"
            raise ValueError(msg)
        return self


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (CLI flags) on top."""
    clean = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**clean)


def frozen_settings(values: dict[str, Any]) -> Settings:
    """A run's frozen settings (every field given, so the environment adds nothing): built
    once per distinct set, because each build reads the environment (~15 ms) and every
    stage task and batch asks for them."""
    return _frozen_settings(json.dumps(values, sort_keys=True, default=str))


@functools.lru_cache(maxsize=32)
def _frozen_settings(frozen: str) -> Settings:
    return Settings(**json.loads(frozen))
