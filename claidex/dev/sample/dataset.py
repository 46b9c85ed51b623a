"""Deterministic CMS-like sample dataset (SPEC §3) with planted anomalies and their ground truth;
and the copy of one a week later.

Everything is vectorised with numpy; the only Python loops run over ownership
levels (at most six) and output files, never over providers or rows. Each table is made
in its own module (providers, ownership, planted, payments); this one fixes the order
they draw in from the one random generator.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import polars as pl

from claidex.dev.sample.common import PART_NPIS, Draw, Layout, write
from claidex.dev.sample.ownership import graph
from claidex.dev.sample.payments import payment_parts, write_payments
from claidex.dev.sample.planted import exclusion_list, planted_sets, taint_chains
from claidex.dev.sample.providers import (
    attributes,
    chain_display_names,
    display_names,
    population,
    providers_table,
)


def generate(
    out_dir: Path,
    *,
    providers: int,
    seed: int = 7,
    layout: Layout = "lines",
    part_npis: int = PART_NPIS,
) -> dict[str, object]:
    """Write the six dataset files plus planted.parquet into out_dir; same seed, same bytes.
    Payments of more than `part_npis` NPIs go to payments_combined/ as parts."""
    if providers < 50:
        msg = "--providers must be at least 50"
        raise ValueError(msg)
    if part_npis < 1:
        msg = "--part-npis must be at least 1"
        raise ValueError(msg)
    return _draw_and_write(Draw(Path(out_dir), providers, seed, layout, part_npis))


def next_week(source: Path, target: Path, *, movers: int = 40) -> dict[str, object]:
    """A copy of a generated dataset as a later recompute would see it: the first `movers`
    paying NPIs (after the first) bill nine times as much, the first one stops billing,
    and five bad payment rows arrive (a short NPI twice, two negative amounts, an exact
    copy). For the report's "against the previous run" section and its screenshot."""
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.is_file():
            shutil.copy(path, target / path.name)
    payments = pl.read_parquet(source / "payments_combined.parquet")
    npis = payments["npi"].unique().sort()
    gone, boosted = npis[0], npis[1 : movers + 1]
    payments = payments.filter(pl.col("npi") != gone).with_columns(
        pl.when(pl.col("npi").is_in(boosted.implode()))
        .then(pl.col("payments") * 9)
        .otherwise(pl.col("payments"))
        .alias("payments")
    )
    bad = payments.head(4).with_columns(
        pl.Series("npi", ["123", "123", payments["npi"][5], payments["npi"][6]]),
        pl.Series("payments", [10.0, 10.0, -5.0, -1.0]),
    )
    pl.concat([payments, bad, payments.slice(9, 1)]).write_parquet(
        target / "payments_combined.parquet"
    )
    return {"removed": gone, "boosted": boosted.len(), "bad_rows": bad.height + 1}


def _draw_and_write(gen: Draw) -> dict[str, object]:
    """The tables in the order they draw from the generator: this order is the dataset."""
    started = time.perf_counter()
    gen.out.mkdir(parents=True, exist_ok=True)
    pop = population(gen)
    taxonomy, state = attributes(gen, pop)
    entities, edges, snf_tree, chain_owner = graph(gen, pop)
    chain_names = chain_display_names(gen, pop, entities, chain_owner)
    snf_names = entities.filter(pl.col("entity_type") == "SNF")["name"]
    names = display_names(gen, pop, snf_names, chain_names)
    planted = planted_sets(gen, pop)
    excluded_chain, tainted_snfs, entity_exclusions = taint_chains(
        gen, pop, entities, snf_tree, chain_owner
    )
    planted["excluded_chain"] = tainted_snfs
    exclusions, listed = exclusion_list(gen, pop, excluded_chain)
    providers, on_record = providers_table(gen, pop, names, taxonomy, state, listed)
    payment_rows = write_payments(gen, payment_parts(gen, pop, taxonomy, state, planted, on_record))
    planted_df = pl.concat(
        [
            pl.DataFrame({"npi": pl.Series(pop.npi[idx].astype(str)), "kind": kind})
            for kind, idx in planted.items()
        ]
    )
    tables = {
        "providers": providers,
        "exclusions": exclusions,
        "entities": entities,
        "ownership": edges,
        "entity_exclusions": entity_exclusions,
        "planted": planted_df,
    }
    for name, table in tables.items():
        write(table, gen.out / f"{name}.parquet")
    return {
        "providers": pop.n_providers,
        "payment_rows": payment_rows,
        "entities": entities.height,
        "ownership_edges": edges.height,
        "exclusions": exclusions.height,
        "planted": {k: int(v.size) for k, v in planted.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
