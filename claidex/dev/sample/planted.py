"""The planted anomalies (their ground truth is planted.parquet) and the exclusion lists: LEIE
rows and excluded owner entities, the excluded_chain kind among them."""

from __future__ import annotations

import numpy as np
import polars as pl

from claidex.dev.sample.common import PLANTED_SHARE, Draw, Population


def planted_sets(gen: Draw, pop: Population) -> dict[str, np.ndarray]:
    """Disjoint sets of ordinary providers for the three billing anomalies."""
    ordinary = np.arange(pop.snf.size + pop.chain.size, pop.n_providers)
    per_kind = max(1, int(pop.n_providers * PLANTED_SHARE))
    picks = gen.rng.choice(ordinary, size=3 * per_kind, replace=False)
    return {
        "billing_outlier": picks[:per_kind],
        "explosive_growth": picks[per_kind : 2 * per_kind],
        "program_concentration": picks[2 * per_kind :],
    }


def taint_chains(
    gen: Draw,
    pop: Population,
    entities: pl.DataFrame,
    snf_tree: np.ndarray,
    chain_owner: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
    """Excluded chain providers in a few chains (an owner entity excluded in half of them).

    Returns the excluded chain providers, the SNFs of tainted chains, entity exclusions.
    """
    rng = gen.rng
    owner_tree = pl.Series(chain_owner).str.extract(r"^OWN(\d+)-", 1).cast(pl.Int64).to_numpy()
    trees_with_chain = np.unique(owner_tree)
    n_taint = min(trees_with_chain.size, max(3, int(trees_with_chain.size * 0.06)))
    tainted = rng.choice(trees_with_chain, size=n_taint, replace=False)
    in_tainted = np.isin(owner_tree, tainted)
    excluded_chain = pop.chain[in_tainted & (rng.random(pop.chain.size) < 0.6)]
    owners = entities.filter(pl.col("entity_id").str.starts_with("OWN")).with_columns(
        pl.col("entity_id").str.extract(r"^OWN(\d+)-", 1).cast(pl.Int64).alias("tree")
    )
    half = tainted[: max(1, tainted.size // 2)]
    excluded_owners = (
        owners.filter(pl.col("tree").is_in(half.tolist()))
        .group_by("tree")
        .agg(pl.col("entity_id").sort().first())["entity_id"]
    )
    random_owners = owners.sample(fraction=0.002, seed=int(rng.integers(1 << 30)))["entity_id"]
    entity_exclusions = pl.DataFrame(
        {"entity_id": pl.concat([excluded_owners, random_owners]).unique().sort()}
    )
    return excluded_chain, pop.snf[np.isin(snf_tree, tainted)], entity_exclusions


def exclusion_list(
    gen: Draw, pop: Population, excluded_chain: np.ndarray
) -> tuple[pl.DataFrame, np.ndarray]:
    """LEIE: ~1 % of NPIs, some reinstated, plus rows without an NPI; and who is listed."""
    rng, n = gen.rng, pop.n_providers
    direct = rng.choice(
        np.arange(pop.snf.size + pop.chain.size, pop.npi.size),
        size=max(1, n // 100),
        replace=False,
    )
    listed = np.concatenate([direct, excluded_chain])
    reinstated = rng.random(listed.size) < 0.15
    reinstated[direct.size :] = False
    n_blank = max(1, n // 300)
    leie_npi = np.concatenate(
        [pop.npi[listed].astype(str), np.array([None] * n_blank, dtype=object)]
    )
    days = rng.integers(0, 365 * 24, leie_npi.size)
    table = pl.DataFrame(
        {
            "exclusion_id": [f"LEIE{i:08d}" for i in range(leie_npi.size)],
            "npi": pl.Series(leie_npi, dtype=pl.String),
            "excldate": pl.Series(np.datetime64("2000-01-01") + days.astype("timedelta64[D]")).cast(
                pl.Date
            ),
            "reinstated": pl.Series(np.concatenate([reinstated, rng.random(n_blank) < 0.15])),
        }
    )
    return table, listed
