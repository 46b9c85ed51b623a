"""Issue 11: a bad-input corpus that stays. Every mutated dataset ends in one clear error or
in a scored run whose rows are all accounted for, and a second run gives the same bytes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from claidex.dev.sample import generate
from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.errors import ClaidexError
from tests.builders import payments_as_parts

PAY, PROV, LEIE = "payments_combined.parquet", "providers.parquet", "exclusions.parquet"
ENT, OWN, ENTX = "entities.parquet", "ownership.parquet", "entity_exclusions.parquet"
SCORE_COLUMNS = [
    "risk_score", "r_raw", "billing_outlier_score", "billing_outlier_percentile",
    "ownership_chain_risk", "payment_trajectory_score", "payment_trajectory_zscore",
    "exclusion_proximity_score", "program_concentration_score",
]  # fmt: skip


def _edit(name: str, change: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[Path], None]:
    def apply(data: Path) -> None:
        change(pl.read_parquet(data / name)).write_parquet(data / name)

    return apply


def _first_rows(name: str, column: str, value: object, rows: int = 3) -> Callable[[Path], None]:
    """Set `column` to `value` in the first `rows` rows (a typed literal keeps the dtype)."""

    def change(df: pl.DataFrame) -> pl.DataFrame:
        literal = pl.lit(value, dtype=df.schema[column]) if value is not None else pl.lit(None)
        first = pl.int_range(pl.len()) < rows
        return df.with_columns(
            pl.when(first)
            .then(literal)
            .otherwise(pl.col(column))
            .cast(df.schema[column])
            .alias(column)
        )

    return _edit(name, change)


def _write_raw(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda data: (data / name).write_bytes(content)


def _unsigned(name: str, column: str, value: int) -> Callable[[Path], None]:
    def apply(data: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(data / name)
        values = pa.array([value] * table.num_rows, type=pa.uint64())
        index = table.schema.get_field_index(column)
        pq.write_table(table.set_column(index, column, values), data / name)

    return apply


def _duplicate_column(data: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(data / PAY)
    pq.write_table(table.append_column("year", table["year"]), data / PAY)


def _corrupt_pages(data: Path, name: str = PAY) -> None:
    path = data / name
    pl.read_parquet(path).write_parquet(path, compression="zstd", statistics=False)
    raw = bytearray(path.read_bytes())
    footer = int.from_bytes(raw[-8:-4], "little") + 8
    for offset in range(8, len(raw) - footer - 8, 3):
        raw[offset] ^= 0x5A
    path.write_bytes(bytes(raw))


def _directory(data: Path) -> None:
    (data / PAY).unlink()
    (data / PAY).mkdir()


def _append(name: str, rows: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[Path], None]:
    return _edit(name, lambda df: pl.concat([df, rows(df).cast(df.schema)]))


def _overflow_rows(df: pl.DataFrame) -> pl.DataFrame:
    row = df.head(1)
    return pl.concat(
        [
            row.with_columns(
                pl.lit(f"P{i}").alias("program"),
                pl.lit(1e12).alias("payments"),
                pl.lit(1e12).alias("claims"),
                pl.lit(1e12).alias("beneficiaries"),
            )
            for i in range(10)
        ]
    )


def _edges(*pairs: tuple[str, str]) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda df: pl.DataFrame(
        {"owner_id": [a for a, _ in pairs], "owned_id": [b for _, b in pairs]}
    )


def _cycle(df: pl.DataFrame) -> pl.DataFrame:
    snf = df.filter(pl.col("owned_id").str.starts_with("SNF"))["owned_id"][0]
    owner = df.filter(pl.col("owned_id") == snf)["owner_id"][0]
    return pl.DataFrame({"owner_id": [snf, owner], "owned_id": [owner, owner]})  # loop + self


# name -> (mutation, expected): expected is ("error", text in the message) or
# ("scored", a quarantine reason that must appear, or None).
CORPUS: dict[str, tuple[Callable[[Path], None], tuple[str, str | None]]] = {
    "missing column state": (
        _edit(PROV, lambda df: df.drop("state")),
        ("error", "'state' is missing"),
    ),
    "missing column year": (_edit(PAY, lambda df: df.drop("year")), ("error", "'year' is missing")),
    "payments as text": (
        _edit(PAY, lambda df: df.with_columns(pl.col("payments").cast(pl.String))),
        ("error", "column 'payments' has type String"),
    ),
    "year as float": (
        _edit(PAY, lambda df: df.with_columns(pl.col("year").cast(pl.Float64))),
        ("error", "column 'year' has type Float64"),
    ),
    "missing exclusions file": (lambda d: (d / LEIE).unlink(), ("error", "input file is missing")),
    "missing entities file": (lambda d: (d / ENT).unlink(), ("error", "input file is missing")),
    "empty payments file": (_write_raw(PAY, b""), ("error", "not a readable Parquet file")),
    "text instead of parquet": (
        _write_raw(PROV, b"npi,state\n1,AK\n"),
        ("error", "not a readable"),
    ),
    "payments is a directory": (_directory, ("error", "is a directory")),
    "duplicate column names": (_duplicate_column, ("error", "more than one occurrence")),
    "corrupt data pages": (_corrupt_pages, ("error", "cannot be read")),
    "uint64 year 2^63+5": (_unsigned(PAY, "year", 2**63 + 5), ("error", "beyond the Int64 range")),
    "uint64 entity_type_code": (
        _unsigned(PROV, "entity_type_code", 2**64 - 1),
        ("error", "beyond the Int64 range"),
    ),
    "no payment rows": (_edit(PAY, lambda df: df.head(0)), ("error", "no valid payment rows")),
    "every payment row bad": (
        _edit(PAY, lambda df: df.with_columns(pl.lit(-1.0).alias("payments"))),
        ("error", "no valid payment rows"),
    ),
    "npi of 9 digits": (_first_rows(PAY, "npi", "123456789"), ("scored", "npi not 10 digits")),
    "npi failing the check digit": (
        _first_rows(PAY, "npi", "1234567890"),
        ("scored", None),
    ),
    "npi with letters": (_first_rows(PAY, "npi", "12345abcde"), ("scored", None)),
    "null npi": (_first_rows(PAY, "npi", None), ("scored", None)),
    "negative payments": (_first_rows(PAY, "payments", -5.0), ("scored", "payments negative")),
    "NaN payments": (_first_rows(PAY, "payments", float("nan")), ("scored", "payments not finite")),
    "infinite claims": (_first_rows(PAY, "claims", float("inf")), ("scored", "claims not finite")),
    "null beneficiaries": (
        _first_rows(PAY, "beneficiaries", None),
        ("scored", "beneficiaries missing"),
    ),
    "payments above the cap": (_first_rows(PAY, "payments", 5e12), ("scored", "above")),
    "null year": (_first_rows(PAY, "year", None), ("scored", "year missing")),
    "year 1800": (_first_rows(PAY, "year", 1800), ("scored", "year outside")),
    "year 3000": (_first_rows(PAY, "year", 3000), ("scored", "year outside")),
    "null program": (_first_rows(PAY, "program", None), ("scored", "program missing")),
    "NUL byte in a program": (
        _first_rows(PAY, "program", "Medi\x00care"),
        ("scored", "program holds a NUL byte"),
    ),
    "NUL byte in a display name": (
        _first_rows(PROV, "display_name", "A\x00B"),
        ("scored", "display_name holds a NUL byte"),
    ),
    "exact duplicate payment rows": (
        _append(PAY, lambda df: df.head(25)),
        ("scored", "duplicate row"),
    ),
    "duplicate provider npi": (_append(PROV, lambda df: df.head(4)), ("scored", "duplicate npi")),
    "exclusion without id": (
        _first_rows(LEIE, "exclusion_id", None),
        ("scored", "exclusion_id missing"),
    ),
    "exclusion with a bad npi": (_first_rows(LEIE, "npi", "999"), ("scored", None)),
    "entity without id": (_first_rows(ENT, "entity_id", None), ("scored", "entity_id missing")),
    "duplicate entity id": (_append(ENT, lambda df: df.head(2)), ("scored", "duplicate entity_id")),
    "edge from an unknown owner": (
        _append(OWN, _edges(("NOBODY", "SNF0000000"))),
        ("scored", "owner_id not in entities"),
    ),
    "edge to an unknown entity": (
        _append(OWN, _edges(("SNF0000000", "NOWHERE"))),
        ("scored", "owned_id not in entities"),
    ),
    "edge without an owner": (_first_rows(OWN, "owner_id", None), ("scored", "owner_id missing")),
    "graph cycle and self-loop": (_append(OWN, _cycle), ("scored", None)),
    "entity exclusion of an unknown entity": (
        _append(ENTX, lambda df: pl.DataFrame({"entity_id": ["GHOST"]})),
        ("scored", "entity_id not in entities"),
    ),
    "ten rows of 1e12 in one npi-year": (_append(PAY, _overflow_rows), ("scored", None)),
    "a stray row in 2030": (
        _append(PAY, lambda df: df.head(1).with_columns(pl.lit(2030).alias("year"))),
        ("scored", None),
    ),
    "rows shuffled": (
        _edit(PAY, lambda df: df.sample(fraction=1.0, shuffle=True, seed=9)),
        ("scored", None),
    ),
    "empty display names": (_first_rows(PROV, "display_name", "", rows=40), ("scored", None)),
    "a 20,000-character name": (
        _first_rows(PROV, "display_name", "X" * 20_000, rows=1),
        ("scored", None),
    ),
    "unicode programs and taxonomies": (
        _first_rows(PAY, "program", "Médicaid 🏥", rows=30),
        ("scored", None),
    ),
    "an all-null column of type Null": (
        _edit(PROV, lambda df: df.with_columns(pl.lit(None).alias("is_excluded"))),
        ("scored", None),
    ),
    "claims of zero everywhere": (
        _edit(PAY, lambda df: df.with_columns(pl.lit(0.0).alias("claims"))),
        ("scored", None),
    ),
}


def _as_parts(
    extra: Callable[[Path], None] | None = None, parts: int = 4
) -> Callable[[Path], None]:
    """payments_combined as a directory of `parts` parts, then `extra` on it."""

    def apply(data: Path) -> None:
        folder = payments_as_parts(data, parts)
        if extra is not None:
            extra(folder)

    return apply


def _corrupt_part(folder: Path) -> None:
    _corrupt_pages(folder, "part-00001.parquet")


def _huge_years(df: pl.DataFrame) -> pl.DataFrame:
    """Years beyond Int32 in the first rows (the column widened to hold them)."""
    first = pl.int_range(pl.len()) < 3
    year = pl.col("year").cast(pl.Int64)
    return df.with_columns(pl.when(first).then(pl.lit(3_000_000_000)).otherwise(year).alias("year"))


# issue 26: dataset layouts refused before any row is read, a corrupt part, huge years
CORPUS.update(
    {
        "a stray file among the parts": (
            _as_parts(lambda f: (f / "notes.txt").write_text("x")),
            ("error", "notes.txt, which is not a .parquet part"),
        ),
        "a subdirectory among the parts": (
            _as_parts(lambda f: (f / "older").mkdir()),
            ("error", "older/, which is not a .parquet part"),
        ),
        "both the file and the parts": (
            lambda data: (
                pl.read_parquet(data / PAY).write_parquet(data / "keep.parquet"),
                _as_parts()(data),
                (data / "keep.parquet").rename(data / PAY),
            ),
            ("error", "both exist: keep one form of the payments_combined table"),
        ),
        "an empty parts directory": (
            lambda data: ((data / PAY).unlink(), (data / "payments_combined").mkdir()),
            ("error", "holds no .parquet parts"),
        ),
        "a corrupt part": (
            _as_parts(_corrupt_part),
            ("error", "payments_combined/part-00001.parquet: cannot be read"),
        ),
        "years beyond Int32": (_edit(PAY, _huge_years), ("scored", "year outside")),
    }
)


@pytest.fixture(scope="module")
def base_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("corpus-base")
    generate(directory, providers=300, seed=3)
    return directory


def _conservation(data: Path, paths) -> None:
    """input rows = in + outside the window + quarantined; every provider with valid in-window
    rows scored exactly once; no null or NaN score."""
    counts = json.loads(paths.input_counts.read_text())
    quarantine = pl.read_parquet(paths.quarantine)
    payments = pl.read_parquet(data / PAY)
    bad = quarantine.filter(pl.col("source") == "payments_combined")
    assert payments.height == counts["payment_rows_valid"] + bad.height
    assert counts["payment_rows_valid"] == (
        counts["payment_rows_in_window"]
        + counts["payment_rows_before_window"]
        + counts["payment_rows_after_window"]
    )
    t = counts["window_end_year"]
    valid = payments.with_row_index("source_row").join(
        bad.select("source_row"), on="source_row", how="anti"
    )
    expected = valid.filter(pl.col("year").is_between(t - 4, t))["npi"].unique().sort()
    scores = pl.read_parquet(paths.scores)
    assert scores["npi"].is_unique().all()
    assert scores["npi"].sort().to_list() == expected.to_list()
    for column in SCORE_COLUMNS:
        values = scores[column]
        assert values.null_count() == 0, column
        assert not values.is_nan().any(), column


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_input_corpus(base_dataset: Path, tmp_path: Path, case: str) -> None:
    mutate, (outcome, detail) = CORPUS[case]
    data = tmp_path / "data"
    shutil.copytree(base_dataset, data)
    mutate(data)
    changed = [
        name
        for name in (PAY, PROV, LEIE, ENT, OWN, ENTX)
        if not (data / name).is_file()
        or (data / name).read_bytes() != (base_dataset / name).read_bytes()
    ]
    assert changed, "the mutation changed nothing"
    results = []
    for attempt in ("first", "again"):
        run = tmp_path / attempt
        if outcome == "error":
            with pytest.raises(ClaidexError) as caught:
                run_local(data, Settings(), run_dir=run, show_progress=False)
            message = str(caught.value)
            assert "\n" not in message and detail in message, message
            ledger = json.loads((run / "ledger.json").read_text())
            assert ledger["status"] == "failed"
            assert not (run / "scores.parquet").exists()
            results.append(message.replace(str(run), "RUN"))
            continue
        paths = run_local(data, Settings(), run_dir=run, show_progress=False)
        _conservation(data, paths)
        if detail is not None:
            reasons = pl.read_parquet(paths.quarantine)["reason"]
            assert reasons.str.contains(detail, literal=True).any(), reasons.unique().to_list()
        results.append(paths.scores.read_bytes() + paths.quarantine.read_bytes())
    assert results[0] == results[1]


def test_a_year_beyond_int32_is_quarantined_alike_at_any_shard_count(
    base_dataset: Path, tmp_path: Path
) -> None:
    """Issue 26: such a row once failed a cast, with a different message at one shard and
    at seven; it is a row outside the valid years, the same at every shard count."""
    data = tmp_path / "data"
    shutil.copytree(base_dataset, data)
    _edit(PAY, _huge_years)(data)
    quarantines = []
    for shards in (1, 7):
        paths = run_local(data, Settings(shards=shards), run_dir=tmp_path / f"s{shards}",
                          show_progress=False)  # fmt: skip
        quarantine = pl.read_parquet(paths.quarantine)
        huge = quarantine.filter(pl.col("record").str.contains("3000000000"))
        assert huge.height == 3 and set(huge["reason"]) == {"year outside 1990-2100"}
        quarantines.append(quarantine)
    assert quarantines[0].equals(quarantines[1])
