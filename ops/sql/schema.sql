-- Claidex schema (idempotent: `claidex db init` applies it on every call).
-- Sources (CMS extracts, LEIE, ownership graph), the published scores and the run ledger.

-- Source tables keep whatever the extracts hold (no keys or NOT NULL): bad rows are
-- quarantined by `prepare` with a reason, never rejected at load time.
CREATE TABLE IF NOT EXISTS providers (
    npi               TEXT,
    entity_type_code  INTEGER,
    display_name      TEXT,
    taxonomy_1        TEXT,
    state             TEXT,
    is_excluded       BOOLEAN
);

CREATE INDEX IF NOT EXISTS providers_npi_idx ON providers (npi);

CREATE TABLE IF NOT EXISTS exclusions (
    exclusion_id  TEXT,
    npi           TEXT,
    excldate      DATE,
    reinstated    BOOLEAN
);
CREATE INDEX IF NOT EXISTS exclusions_npi_idx ON exclusions (npi);

-- One table per program as CMS publishes them. Medicare and Part D carry the
-- provider type (taxonomy) and state of the extract; Medicaid does not.
CREATE TABLE IF NOT EXISTS payments_medicare (
    npi            TEXT,
    year           INTEGER,
    payments       DOUBLE PRECISION,
    claims         DOUBLE PRECISION,
    beneficiaries  DOUBLE PRECISION,
    provider_type  TEXT,
    state          TEXT
);
CREATE TABLE IF NOT EXISTS medicare_part_d (LIKE payments_medicare);
CREATE TABLE IF NOT EXISTS payments_medicaid (
    npi            TEXT,
    year           INTEGER,
    payments       DOUBLE PRECISION,
    claims         DOUBLE PRECISION,
    beneficiaries  DOUBLE PRECISION
);
-- Any other program (SPEC §3: "others allowed").
CREATE TABLE IF NOT EXISTS payments_other (
    program        TEXT,
    LIKE payments_medicare
);
CREATE INDEX IF NOT EXISTS payments_medicare_npi_idx ON payments_medicare (npi);
CREATE INDEX IF NOT EXISTS medicare_part_d_npi_idx ON medicare_part_d (npi);
CREATE INDEX IF NOT EXISTS payments_medicaid_npi_idx ON payments_medicaid (npi);

-- payments_combined_v: the union of the programs; taxonomy and state from the
-- provider record, else the extract's provider_type/state, else 'Unknown'.
CREATE OR REPLACE VIEW payments_combined_v AS
WITH rows AS (
    SELECT npi, year, 'Medicare'::text AS program, payments, claims, beneficiaries,
           provider_type, state
      FROM payments_medicare
    UNION ALL
    SELECT npi, year, 'MedicarePartD', payments, claims, beneficiaries, provider_type, state
      FROM medicare_part_d
    UNION ALL
    SELECT npi, year, 'Medicaid', payments, claims, beneficiaries, NULL, NULL
      FROM payments_medicaid
    UNION ALL
    SELECT npi, year, program, payments, claims, beneficiaries, provider_type, state
      FROM payments_other
)
SELECT r.npi, r.year, r.program, r.payments, r.claims, r.beneficiaries,
       COALESCE(NULLIF(p.taxonomy_1, ''), NULLIF(r.provider_type, ''), 'Unknown') AS taxonomy,
       COALESCE(NULLIF(p.state, ''), NULLIF(r.state, ''), 'Unknown') AS state
  FROM rows r
  LEFT JOIN providers p ON p.npi = r.npi;

-- Ownership graph (SPEC §3; Neo4j holds the same graph in neo4j-* modes).
CREATE TABLE IF NOT EXISTS corporate_entities (
    entity_id    TEXT,
    name         TEXT,
    entity_type  TEXT
);
CREATE TABLE IF NOT EXISTS entity_ownership (
    owner_id  TEXT,
    owned_id  TEXT
);
CREATE INDEX IF NOT EXISTS entity_ownership_owned_idx ON entity_ownership (owned_id);
CREATE TABLE IF NOT EXISTS entity_exclusions (
    entity_id  TEXT
);

-- Published scores: one row per provider, read by the API.
CREATE TABLE IF NOT EXISTS provider_risk_scores (
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
    updated_at                   TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- additive columns
    run_id                       TEXT,
    top_program                  TEXT,
    snf_entity_id                TEXT,
    chain_provider_count         INTEGER,
    chain_excluded_count         INTEGER,
    owner_excluded               BOOLEAN,
    actively_excluded            BOOLEAN
);
-- Tables created by an older version (or the legacy job) gain the newer columns.
ALTER TABLE provider_risk_scores
    ADD COLUMN IF NOT EXISTS updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS run_id TEXT,
    ADD COLUMN IF NOT EXISTS top_program TEXT,
    ADD COLUMN IF NOT EXISTS snf_entity_id TEXT,
    ADD COLUMN IF NOT EXISTS chain_provider_count INTEGER,
    ADD COLUMN IF NOT EXISTS chain_excluded_count INTEGER,
    ADD COLUMN IF NOT EXISTS owner_excluded BOOLEAN,
    ADD COLUMN IF NOT EXISTS actively_excluded BOOLEAN;
CREATE INDEX IF NOT EXISTS provider_risk_scores_score_idx ON provider_risk_scores (risk_score DESC);
CREATE INDEX IF NOT EXISTS provider_risk_scores_label_idx ON provider_risk_scores (risk_label);
CREATE INDEX IF NOT EXISTS provider_risk_scores_updated_idx ON provider_risk_scores (updated_at DESC);

-- Run ledger: every run that reached the database, and what it published.
CREATE TABLE IF NOT EXISTS claidex_runs (
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
