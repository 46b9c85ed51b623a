-- Claidex's own objects, each `-- object: NAME` section run only when NAME is missing: the
-- published scores table and the run ledger. On a production database that already
-- has provider_risk_scores, only its missing additive columns and indexes are added; the
-- source tables and payments_combined_v are never touched (see source_schema.sql).

-- Published scores: one row per provider, read by the API (SPEC §3 columns).
-- object: provider_risk_scores
CREATE TABLE provider_risk_scores (
    npi                          TEXT PRIMARY KEY,
    risk_score                   NUMERIC(6,2) NOT NULL,
    risk_label                   TEXT NOT NULL,
    r_raw                        NUMERIC(8,4) NOT NULL,
    billing_outlier_score        NUMERIC(6,2),
    billing_outlier_percentile   NUMERIC(6,2),
    ownership_chain_risk         NUMERIC(6,2),
    payment_trajectory_score     NUMERIC(6,2),
    payment_trajectory_zscore    NUMERIC(8,4),
    exclusion_proximity_score    NUMERIC(6,2),
    program_concentration_score  NUMERIC(6,2),
    peer_taxonomy                TEXT,
    peer_state                   TEXT,
    peer_count                   INTEGER,
    data_window_years            INTEGER[],
    flags                        JSONB NOT NULL DEFAULT '[]'::jsonb,
    components                   JSONB NOT NULL DEFAULT '{}'::jsonb,
    updated_at                   TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- Its additive columns (run_id, top_program, ...), the columns of any component registered
-- beyond SPEC's five (scoring.registry: a new component's migration) and its indexes are
-- added by scoring.db.schema, each only where it is missing: on a production table that
-- has them, a second `db init` takes no lock on provider_risk_scores at all.

-- Run ledger: every run that reached the database, and what it published.
-- object: claidex_runs
CREATE TABLE claidex_runs (
    run_id             TEXT PRIMARY KEY,
    kind               TEXT NOT NULL,
    status             TEXT NOT NULL,
    input_fingerprint  TEXT,
    rows_published     BIGINT,
    rows_removed       BIGINT,
    error              TEXT,
    started_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at       TIMESTAMPTZ
);
