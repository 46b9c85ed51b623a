-- The production Claidex source objects (issue 10), laid down by `claidex db init` only
-- where they are absent: an empty development or test database. On a production
-- database every one of them exists already and is never dropped, replaced or altered.
-- Each `-- object: NAME` section creates one object; scoring.db.schema runs it only when
-- NAME resolves to nothing on the search_path (to_regclass), so it never shadows an
-- object that lives in another schema and never needs CREATE rights on a complete database.

-- object: providers
CREATE TABLE providers (
    npi               TEXT PRIMARY KEY,
    entity_type_code  SMALLINT,
    org_name          TEXT,
    last_name         TEXT,
    first_name        TEXT,
    middle_name       TEXT,
    credential        TEXT,
    address_line1     TEXT,
    city              TEXT,
    state             TEXT,
    zip               TEXT,
    taxonomy_1        TEXT,
    license_1         TEXT,
    license_state_1   TEXT,
    display_name      TEXT,
    is_excluded       BOOLEAN DEFAULT false,
    eligible_partb    BOOLEAN,
    eligible_dme      BOOLEAN,
    eligible_hha      BOOLEAN,
    eligible_pmd      BOOLEAN,
    eligible_hospice  BOOLEAN,
    updated_at        TIMESTAMPTZ
);

-- LEIE.
-- object: exclusions
CREATE TABLE exclusions (
    exclusion_id     TEXT PRIMARY KEY,
    source           TEXT DEFAULT 'LEIE',
    npi              TEXT,
    last_name        TEXT,
    first_name       TEXT,
    business_name    TEXT,
    display_name     TEXT,
    excl_type        TEXT,
    excl_type_label  TEXT,
    excldate         DATE,
    reindate         DATE,
    state            CHAR(2),
    reinstated       BOOLEAN DEFAULT false,
    created_at       TIMESTAMPTZ
);

-- object: payments_medicaid
CREATE TABLE payments_medicaid (
    npi            TEXT NOT NULL,
    year           SMALLINT,
    payments       NUMERIC(18,2),
    claims         NUMERIC(18,0),
    beneficiaries  NUMERIC(18,0),
    PRIMARY KEY (npi, year)
);

-- object: payments_medicare
CREATE TABLE payments_medicare (
    npi                    TEXT NOT NULL,
    year                   SMALLINT,
    last_org_name          TEXT,
    first_name             TEXT,
    city                   TEXT,
    state                  TEXT,
    zip                    TEXT,
    provider_type          TEXT,
    entity_code            CHAR(1),
    medicare_allowed       NUMERIC(18,2),
    medicare_paid          NUMERIC(18,2),
    medicare_standardized  NUMERIC(18,2),
    total_services         NUMERIC(18,0),
    total_beneficiaries    NUMERIC(18,0),
    PRIMARY KEY (npi, year)
);

-- object: medicare_part_d
CREATE TABLE medicare_part_d (
    npi              TEXT NOT NULL,
    year             INTEGER NOT NULL,
    last_org_name    TEXT,
    state            TEXT,
    provider_type    TEXT,
    total_claims     NUMERIC,
    total_drug_cost  NUMERIC,
    total_benes      NUMERIC,
    opioid_claims    NUMERIC,
    opioid_cost      NUMERIC,
    PRIMARY KEY (npi, year)
);

-- Organisation owners (CMS associate ids); there is no entity-type column.
-- object: corporate_entities
CREATE TABLE corporate_entities (
    entity_id             TEXT PRIMARY KEY,
    name                  TEXT,
    dba                   TEXT,
    address               TEXT,
    city                  TEXT,
    state                 TEXT,
    zip                   TEXT,
    flag_corporation      BOOLEAN,
    flag_llc              BOOLEAN,
    flag_holding_company  BOOLEAN,
    flag_investment_firm  BOOLEAN,
    flag_private_equity   BOOLEAN,
    flag_for_profit       BOOLEAN,
    flag_non_profit       BOOLEAN,
    flag_parent_company   BOOLEAN,
    created_at            TIMESTAMPTZ
);

-- One row per (SNF enrollment, owner); owner_type 'O' organisation, 'I' individual.
-- object: ownership_snf
CREATE TABLE ownership_snf (
    enrollment_id         TEXT,
    provider_associate_id TEXT,
    provider_org_name     TEXT,
    owner_associate_id    TEXT,
    owner_type            CHAR(1),
    role_code             TEXT,
    role_text             TEXT,
    association_date      DATE,
    ownership_pct         NUMERIC(5,2),
    PRIMARY KEY (enrollment_id, owner_associate_id)
);

-- The union of the three programs, one row per (npi, year, program). Taxonomy and state:
-- the provider record's, else the extract's provider_type / state, else 'Unknown'
-- (Medicaid has no provider_type: the provider record, else 'Unknown').
-- object: payments_combined_v
CREATE VIEW payments_combined_v AS
SELECT m.npi, m.year::integer AS year, 'Medicaid'::text AS program,
       m.payments::numeric AS payments, NULL::numeric AS allowed,
       m.claims::numeric AS claims, m.beneficiaries::numeric AS beneficiaries,
       COALESCE(p.taxonomy_1, 'Unknown') AS taxonomy,
       COALESCE(p.state, 'Unknown') AS state
  FROM payments_medicaid m LEFT JOIN providers p ON p.npi = m.npi
UNION ALL
SELECT r.npi, r.year::integer, 'Medicare'::text,
       r.medicare_paid::numeric, r.medicare_allowed::numeric,
       r.total_services::numeric, r.total_beneficiaries::numeric,
       COALESCE(p.taxonomy_1, r.provider_type, 'Unknown'),
       COALESCE(p.state, r.state, 'Unknown')
  FROM payments_medicare r LEFT JOIN providers p ON p.npi = r.npi
UNION ALL
SELECT d.npi, d.year::integer, 'MedicarePartD'::text,
       d.total_drug_cost, NULL::numeric, d.total_claims, d.total_benes,
       COALESCE(p.taxonomy_1, d.provider_type, 'Unknown'),
       COALESCE(p.state, d.state, 'Unknown')
  FROM medicare_part_d d LEFT JOIN providers p ON p.npi = d.npi;

