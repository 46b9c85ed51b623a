"""`claidex db load DIR`: a dataset directory into the production source layout (issue 10).

The dataset's rows go where production keeps them: payments_combined into the three
program tables (read back through payments_combined_v), the ownership graph into
ownership_snf + corporate_entities, entity exclusions into the optional
entity_exclusions table. A dataset that this layout cannot hold exactly (two rows for
one (npi, year, program), cents past NUMERIC(18,2), a program with no table, a
taxonomy the view would replace, an owner edge into a non-SNF) is refused with one
line naming the file, the column and an example, before anything is written: a
loaded database always reads back as the dataset it came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import psycopg
from psycopg import sql

from scoring.db.copy import chunks, copy_in
from scoring.errors import InputError
from scoring.inputs.contract import dataset_file, scan_table

UNKNOWN = "Unknown"  # what payments_combined_v shows when no source has a value
SNF = "SNF"
ENTITY_EXCLUSIONS_TABLE = "entity_exclusions"  # optional: absent means no entity exclusions


@dataclass(frozen=True)
class Amount:
    """One NUMERIC column of a program table: its name and (for a typmod) digits and scale."""

    column: str
    scale: int | None = None  # None: unconstrained NUMERIC
    digits: int = 18


@dataclass(frozen=True)
class ProgramTable:
    table: str
    year_max: int  # SMALLINT or INTEGER
    payments: Amount
    claims: Amount
    beneficiaries: Amount
    provider_type: str | None  # the extract's own taxonomy column (Medicaid has none)
    state: str | None


SMALLINT_MAX, INTEGER_MAX = 32_767, 2_147_483_647  # minimums: -(MAX + 1)
PROGRAM_TABLES = {
    "Medicaid": ProgramTable(
        "payments_medicaid", SMALLINT_MAX,
        Amount("payments", 2), Amount("claims", 0), Amount("beneficiaries", 0), None, None,
    ),
    "Medicare": ProgramTable(
        "payments_medicare", SMALLINT_MAX,
        Amount("medicare_paid", 2), Amount("total_services", 0),
        Amount("total_beneficiaries", 0), "provider_type", "state",
    ),
    "MedicarePartD": ProgramTable(
        "medicare_part_d", INTEGER_MAX,
        Amount("total_drug_cost"), Amount("total_claims"), Amount("total_benes"),
        "provider_type", "state",
    ),
}  # fmt: skip
SOURCE_TABLES = (
    "providers",
    "exclusions",
    *(spec.table for spec in PROGRAM_TABLES.values()),
    "ownership_snf",
    "corporate_entities",
)


def _refuse(where: str, column: str, bad: pl.DataFrame, why: str) -> None:
    """Raise one line naming the file, the column, how many rows and an example."""
    if bad.is_empty():
        return
    example = ", ".join(f"{k}={v!r}" for k, v in bad.row(0, named=True).items())
    msg = f"{where}: column '{column}': {bad.height:,} rows {why} (e.g. {example})"
    raise InputError(msg)


def _duplicates(frame: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    return frame.filter(pl.struct(key).is_duplicated()).select(key).unique().sort(key)


def _decimals(values: pl.Expr) -> pl.Expr:
    """Decimal places of the text COPY sends (the float's shortest repr, e.g. '1.5e-7')."""
    parts = values.cast(pl.String).str.extract_groups(r"^-?\d+(?:\.(\d+))?(?:e([+-]?\d+))?$")
    fraction = parts.struct.field("1").fill_null("").str.strip_chars_end("0").str.len_chars()
    exponent = parts.struct.field("2").cast(pl.Int64).fill_null(0)
    return pl.max_horizontal(fraction.cast(pl.Int64) - exponent, pl.lit(0))


def _not_numeric(values: pl.Expr, amount: Amount) -> pl.Expr:
    """True where NUMERIC(digits, scale) cannot hold the float exactly (NaN it can)."""
    if amount.scale is None:
        return values.is_infinite()
    too_large = values.abs() >= 10.0 ** (amount.digits - amount.scale)
    inexact = _decimals(values) > amount.scale
    return values.is_not_null() & ~values.is_nan() & (values.is_infinite() | too_large | inexact)


def _view_value(provider_value: str, row_value: str, has_own: bool) -> pl.Expr:
    """What payments_combined_v shows: the provider record's, the extract's, else 'Unknown'."""
    sources = [pl.col(provider_value), *([pl.col(row_value)] if has_own else []), pl.lit(UNKNOWN)]
    return pl.coalesce(sources)


def _program_tables(data_dir: Path, providers: pl.DataFrame) -> dict[str, pl.DataFrame]:
    where = str(dataset_file(data_dir, "payments_combined"))
    rows = scan_table(data_dir, "payments_combined").collect()
    _refuse(
        where, "program",
        rows.filter(~pl.col("program").is_in(list(PROGRAM_TABLES)) | pl.col("program").is_null()),
        f"name a program the production layout has no table for ({', '.join(PROGRAM_TABLES)})",
    )  # fmt: skip
    _refuse(where, "npi", rows.filter(pl.col("npi").is_null()), "have no NPI (npi is NOT NULL)")
    _refuse(where, "year", rows.filter(pl.col("year").is_null()), "have no year (a key column)")
    _refuse(
        where, "npi, year, program", _duplicates(rows, ["npi", "year", "program"]),
        "repeat an (npi, year, program): the program tables hold one row per (npi, year)",
    )  # fmt: skip
    record = providers.select(
        "npi", pl.col("taxonomy_1").alias("p_taxonomy"), pl.col("state").alias("p_state")
    )
    rows = rows.join(record, on="npi", how="left")
    tables = {}
    for program, spec in PROGRAM_TABLES.items():
        part = rows.filter(pl.col("program") == program)
        _refuse(
            where, "year",
            part.filter(~pl.col("year").is_between(-spec.year_max - 1, spec.year_max)).select(
                "npi", "year", "program"
            ),
            f"have a year outside {spec.table}.year",
        )  # fmt: skip
        for source, amount in (
            ("payments", spec.payments),
            ("claims", spec.claims),
            ("beneficiaries", spec.beneficiaries),
        ):
            kind = "NUMERIC" if amount.scale is None else f"NUMERIC({amount.digits},{amount.scale})"
            _refuse(
                where, source,
                part.filter(_not_numeric(pl.col(source), amount)).select("npi", "year", source),
                f"of {program} cannot be held exactly by {spec.table}.{amount.column} ({kind})",
            )  # fmt: skip
        for value, own in (("taxonomy", spec.provider_type), ("state", spec.state)):
            shown = _view_value(f"p_{value}", value, own is not None)
            _refuse(
                where, value,
                part.filter(~shown.eq_missing(pl.col(value))).select("npi", "year", value),
                f"of {program} differ from what payments_combined_v derives (the provider "
                "record's value, else the extract's own, else 'Unknown')",
            )  # fmt: skip
        columns = [
            pl.col("npi"),
            pl.col("year"),
            pl.col("payments").alias(spec.payments.column),
            pl.col("claims").alias(spec.claims.column),
            pl.col("beneficiaries").alias(spec.beneficiaries.column),
        ]
        if spec.provider_type:
            columns.append(pl.col("taxonomy").alias(spec.provider_type))
        if spec.state:
            columns.append(pl.col("state").alias(spec.state))
        tables[spec.table] = part.select(columns)
    return tables


def _keyed(data_dir: Path, name: str, key: str) -> pl.DataFrame:
    """A table whose `key` is a primary key in production: no nulls, no repeats."""
    frame = scan_table(data_dir, name).collect()
    where = str(dataset_file(data_dir, name))
    _refuse(where, key, frame.filter(pl.col(key).is_null()), f"have no {key} (a primary key)")
    _refuse(where, key, _duplicates(frame, [key]), f"repeat a {key} (a primary key)")
    return frame


def _graph_tables(data_dir: Path) -> dict[str, pl.DataFrame]:
    """entities + OWNS edges as ownership_snf rows (owner -> SNF) and corporate_entities."""
    entities = _keyed(data_dir, "entities", "entity_id")
    edges = scan_table(data_dir, "ownership").collect().unique().sort("owner_id", "owned_id")
    where = str(dataset_file(data_dir, "ownership"))
    snfs = entities.filter(pl.col("entity_type") == SNF)
    _refuse(
        where, "owned_id", edges.filter(~pl.col("owned_id").is_in(snfs["entity_id"].implode())),
        "are OWNS edges into an entity that is not an SNF: ownership_snf holds only "
        "owner -> SNF edges",
    )  # fmt: skip
    for column in ("owner_id", "owned_id"):
        _refuse(where, column, edges.filter(pl.col(column).is_null()), f"have no {column}")
    _refuse(
        str(dataset_file(data_dir, "entities")), "entity_id",
        snfs.filter(~pl.col("entity_id").is_in(edges["owned_id"].implode())).select("entity_id"),
        "are SNFs without an owner: ownership_snf holds an SNF only through its owner rows",
    )  # fmt: skip
    ownership_snf = edges.join(
        snfs.select(pl.col("entity_id").alias("owned_id"), "name"), on="owned_id"
    ).select(
        pl.col("owned_id").alias("enrollment_id"),
        pl.col("owned_id").alias("provider_associate_id"),
        pl.col("name").alias("provider_org_name"),
        pl.col("owner_id").alias("owner_associate_id"),
        pl.lit("O").alias("owner_type"),
    )
    owners = entities.filter(pl.col("entity_type").ne_missing(SNF)).select("entity_id", "name")
    flagged = scan_table(data_dir, "entity_exclusions").collect().unique().sort("entity_id")
    _refuse(
        str(dataset_file(data_dir, "entity_exclusions")), "entity_id",
        flagged.filter(pl.col("entity_id").is_null()), "have no entity_id (a primary key)",
    )  # fmt: skip
    return {
        "ownership_snf": ownership_snf,
        "corporate_entities": owners,
        ENTITY_EXCLUSIONS_TABLE: flagged,
    }


def production_tables(data_dir: Path) -> dict[str, pl.DataFrame]:
    """The dataset as production's source tables (column names and keys), checked first."""
    providers = _keyed(data_dir, "providers", "npi")
    _refuse(
        str(dataset_file(data_dir, "providers")), "entity_type_code",
        providers.filter(
            ~pl.col("entity_type_code").is_between(-SMALLINT_MAX - 1, SMALLINT_MAX)
        ).select("npi", "entity_type_code"),
        "do not fit providers.entity_type_code (SMALLINT)",
    )  # fmt: skip
    tables = {
        "providers": providers,
        "exclusions": _keyed(data_dir, "exclusions", "exclusion_id"),
        **_program_tables(data_dir, providers),
    }
    if dataset_file(data_dir, "entities").exists():
        tables.update(_graph_tables(data_dir))
    return tables


def _tables_with_rows(conn: psycopg.Connection) -> list[str]:
    return [
        table
        for table in SOURCE_TABLES
        if conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
        ).fetchone()
        == (True,)
    ]


def load_dataset(
    conn: psycopg.Connection, data_dir: Path, *, replace: bool = False
) -> dict[str, int]:
    """Replace the source tables' rows with the dataset's, in one transaction; rows per table.

    Source tables that hold rows are replaced only with `replace`: on a production
    database `db load` would otherwise wipe the CMS extracts.
    """
    tables = production_tables(data_dir)  # refuses before anything is written
    holding = _tables_with_rows(conn)
    if holding and not replace:
        msg = (
            f"db load replaces the source tables' rows, and {', '.join(holding)} hold rows "
            "already: give --replace if this is a development database"
        )
        raise InputError(msg)
    counts = {}
    with conn.transaction():
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {ENTITY_EXCLUSIONS_TABLE} (entity_id TEXT PRIMARY KEY)"
        )  # type: ignore[arg-type]
        conn.execute("TRUNCATE " + ", ".join([*SOURCE_TABLES, ENTITY_EXCLUSIONS_TABLE]))  # type: ignore[arg-type]
        for table, frame in tables.items():
            counts[table] = copy_in(conn, table, chunks(frame))
        for table in tables:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    conn.commit()
    return counts
