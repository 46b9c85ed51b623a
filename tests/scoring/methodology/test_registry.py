"""The component registry (issue 21): a component registered with weight 0 appears in the
scores, the `components` JSONB, the flags, explain, the report and the published table (after
its migration), and every other score stays exactly what it was."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from rich.console import Console

from claidex.explain_view import explain, print_explanation
from claidex.local_engine import run_local
from scoring.config import Settings
from scoring.db.connection import DatabaseError, connect
from scoring.db.publish import published_columns
from scoring.db.published import read_published
from scoring.db.schema import init_schema
from scoring.methodology.flags import Flag, flags_expr
from scoring.methodology.registry import (
    SPEC_COMPONENTS,
    Column,
    Component,
    RegistryError,
    components,
    flag_rules,
    registered,
    slot_columns,
    value_columns,
    weights,
)
from scoring.runs.store import RunPaths
from scoring.stages.publish import publish

TOY_FLAG = "Toy: billing score of 75 or more."
TOY_COLUMNS = ["toy_score", "toy_peers"]


def _toy_exprs(cfg: Settings) -> list[pl.Expr]:
    """A function of an earlier component's score (billing) and of an input column."""
    return [
        ((pl.col("billing_outlier_score") - 50.0) * 2.0).round(2).alias("toy_score"),
        (pl.col("peer_count").cast(pl.Float64) / 10.0).round(4).alias("toy_peers"),
    ]


TOY = Component(
    name="toy",
    score=Column("toy_score"),
    weight="toy",  # Settings.component_weights["toy"]
    exprs=_toy_exprs,
    extras=(Column("toy_peers", "NUMERIC(8,4)"),),
    flags=(Flag(60, lambda _cfg: pl.when(pl.col("toy_score") >= 50).then(pl.lit(TOY_FLAG))),),
)
# What scores.parquet, the components JSONB and the table held before the registry
# (d26296c): the registry must derive exactly these.
SPEC_VALUES = [
    "billing_outlier_score", "billing_outlier_percentile", "ownership_chain_risk",
    "payment_trajectory_score", "payment_trajectory_zscore", "exclusion_proximity_score",
    "program_concentration_score",
]  # fmt: skip
SPEC_PUBLISHED = [
    "npi", "risk_score", "risk_label", "r_raw", *SPEC_VALUES, "peer_taxonomy", "peer_state",
    "peer_count", "data_window_years", "flags", "components", "run_id", "top_program",
    "snf_entity_id", "chain_provider_count", "chain_excluded_count", "owner_excluded",
    "actively_excluded",
]  # fmt: skip


def test_the_registry_derives_the_spec_columns_weights_and_flag_order() -> None:
    assert [c.name for c in components()] == [
        "billing", "ownership", "trajectory", "exclusion", "concentration"
    ]  # fmt: skip
    assert value_columns() == SPEC_VALUES
    assert published_columns() == SPEC_PUBLISHED
    assert slot_columns() == ["billing_year_score", "billing_pct_year", "growth_z"]
    assert list(weights(Settings()).items()) == [
        ("billing_outlier_score", 0.30), ("ownership_chain_risk", 0.25),
        ("payment_trajectory_score", 0.20), ("exclusion_proximity_score", 0.15),
        ("program_concentration_score", 0.10),
    ]  # fmt: skip
    assert weights(Settings(weight_trajectory=0.5))["payment_trajectory_score"] == 0.5
    # SPEC §4's flag order: billing, growth (trajectory), ownership, concentration, exclusion
    ordered = sorted(flag_rules(), key=lambda f: f.order)
    owners = {id(f): c.name for c in SPEC_COMPONENTS for f in c.flags}
    assert [owners[id(f)] for f in ordered] == [
        "billing", "trajectory", "ownership", "concentration", "exclusion"
    ]  # fmt: skip


def test_a_flag_sorts_by_its_order_whoever_declares_it() -> None:
    row = pl.DataFrame(
        {"billing_outlier_percentile": [99.0], "billing_outlier_score": [90.0],
         "payment_trajectory_score": [70.0], "ownership_chain_risk": [0.0],
         "chain_excluded_count": [0], "program_concentration_score": [0.0],
         "top_program": [None], "exclusion_proximity_score": [100.0]}
    )  # fmt: skip
    between = Flag(15, lambda _cfg: pl.lit("between billing and growth"))
    flags = row.select(flags_expr([*flag_rules(), between], Settings()))["flags"][0].to_list()
    assert flags == [
        "Billing > 95th percentile vs. state/taxonomy peers (payments per claim).",
        "between billing and growth",
        "Rapid growth and high billing intensity vs. peers.",
        "Direct or owner-level exclusion on record.",
    ]


def test_registration_is_temporary_checked_and_needs_a_weight() -> None:
    with registered(TOY):
        assert [c.name for c in components()][-1] == "toy"
        assert value_columns() == [*SPEC_VALUES, *TOY_COLUMNS]
        with pytest.raises(RegistryError, match="no weight setting 'toy'"):
            weights(Settings())  # never a silent 0
        assert weights(Settings(component_weights={"toy": 0.0}))["toy_score"] == 0.0
        with pytest.raises(RegistryError, match="already taken"), registered(TOY):
            pass
    assert value_columns() == SPEC_VALUES
    clash = Component("clash", Column("r2"), "toy", _toy_exprs, (Column("ownership_chain_risk"),))
    with pytest.raises(RegistryError, match="ownership_chain_risk"), registered(clash):
        pass


def _run(data: Path, run_dir: Path, **settings: object) -> RunPaths:
    cfg = Settings(**{"batch_size": 1000, "workers": 1, **settings})  # in this process
    return run_local(data, cfg, run_dir=run_dir, show_progress=False)


def test_a_toy_component_with_weight_zero_appears_everywhere_and_changes_no_other_score(
    sample_dataset: Path, database_url: str, tmp_path: Path
) -> None:
    base = pl.read_parquet(_run(sample_dataset, tmp_path / "base").scores)
    base_report = json.loads((tmp_path / "base" / "report.json").read_text())
    with registered(TOY):
        toy_weight = {"component_weights": {"toy": 0.0}}
        paths = _run(sample_dataset, tmp_path / "toy", report_html=True, **toy_weight)
        scores = pl.read_parquet(paths.scores)

        # scores: the toy's values after the SPEC components', worked out from the base run
        at = scores.columns.index("program_concentration_score") + 1
        assert scores.columns[at : at + 2] == TOY_COLUMNS
        assert scores.select(TOY_COLUMNS).to_dicts() == [
            {"toy_score": round((b - 50.0) * 2.0, 2), "toy_peers": round(n / 10.0, 4)}
            for b, n in base.select("billing_outlier_score", "peer_count").iter_rows()
        ]
        # ... and every other score exactly as before (r_raw, risk_score, labels included)
        others = [c for c in base.columns if c not in ("flags", "components")]
        assert_frame_equal(scores.select(others), base.select(others))
        fields = scores["components"].struct.fields
        assert fields == [*SPEC_VALUES, *TOY_COLUMNS]
        components_before = scores.select(
            pl.struct([pl.col("components").struct.field(f) for f in SPEC_VALUES]).alias(
                "components"
            )
        )
        assert_frame_equal(components_before, base.select("components"))
        assert_frame_equal(
            scores.select(pl.col("components").struct.field(*TOY_COLUMNS)),
            scores.select(TOY_COLUMNS),
        )
        # the toy's flag comes last (order 60), where its rule holds
        expected_flags = base.select(
            pl.when(scores["toy_score"] >= 50)
            .then(pl.concat_list("flags", pl.lit([TOY_FLAG])))
            .otherwise(pl.col("flags"))
            .alias("flags")
        )
        assert_frame_equal(scores.select("flags"), expected_flags)
        flagged = scores.filter(pl.col("flags").list.contains(TOY_FLAG))
        assert 0 < flagged.height < scores.height

        # explain: the toy's section and line, its zero term, and it recomputes exactly
        row = flagged.row(0, named=True)
        e = explain(paths, row["npi"])
        assert e["components"] == [c.name for c in SPEC_COMPONENTS] + ["toy"]
        assert e["toy"]["score"] == row["toy_score"] and e["toy"]["toy_peers"] == row["toy_peers"]
        line = f"toy: toy_score {row['toy_score']:,.4f}, toy_peers {row['toy_peers']:,.4f}"
        assert e["toy"]["lines"] == [line]
        assert e["composite"]["terms"]["toy_score"] == {
            "value": row["toy_score"], "weight": 0.0, "term": 0.0
        }  # fmt: skip
        assert {"toy_score", "toy_peers"} <= set(e["checks"])
        assert all(check["equal"] for check in e["checks"].values()), e["checks"]
        assert TOY_FLAG in e["composite"]["flags"]
        console = Console(record=True, width=200)
        print_explanation(e, console)
        assert line in console.export_text()

        # the report: the toy's summary beside the SPEC five, which are unchanged
        summaries = json.loads(paths.report.read_text())["components"]
        toy = summaries.pop("toy_score")
        assert summaries == base_report["components"]
        assert toy["weight"] == 0.0 and toy["share_of_composite"] == 0.0
        assert sum(toy["histogram"]["counts"]) == scores.height
        assert toy["max"] == scores["toy_score"].max()
        assert "toy_score" in paths.report_html.read_text()  # its histogram and table row

        # publish: refused until the toy's migration, which db init derives from the registry
        assert published_columns() == [*SPEC_PUBLISHED[:11], *TOY_COLUMNS, *SPEC_PUBLISHED[11:]]
        with pytest.raises(DatabaseError, match=r"toy_score, toy_peers: run `claidex db init`"):
            publish(paths, database_url, outage_window=0)
        with connect(database_url) as conn:
            added = init_schema(conn)
            assert added == ["provider_risk_scores.toy_score", "provider_risk_scores.toy_peers"]
            assert init_schema(conn) == []
            types = dict(
                conn.execute(
                    "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
                    "WHERE attrelid = 'provider_risk_scores'::regclass AND attnum > 0"
                ).fetchall()
            )
        assert types["toy_score"] == "numeric(6,2)" and types["toy_peers"] == "numeric(8,4)"
        assert types["payment_trajectory_zscore"] == "numeric(8,4)"  # schema.sql = registry
        assert publish(paths, database_url).rows_published == scores.height
        with connect(database_url) as conn:
            table = read_published(conn, scores.schema)
        assert_frame_equal(table, scores)  # every column, the toy's and its JSONB fields too
