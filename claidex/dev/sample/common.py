"""What every table of the sample dataset draws with: the constants, the population of NPIs,
one generation's settings and random generator, and the small vectorised helpers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from claidex.dev.sample import vocabulary as vocab
from scoring.inputs.npi import make_npi

FIRST_YEAR, LAST_YEAR = 2013, 2023
YEARS = np.arange(FIRST_YEAR, LAST_YEAR + 1)
PLANTED_KINDS = ("billing_outlier", "explosive_growth", "program_concentration", "excluded_chain")
PLANTED_SHARE = 0.004  # of paying providers, per kind
MAX_OWNER_LEVELS = 6
# NPIs whose payment rows are drawn and written at once (~12 M rows, ~2.5 GB at peak)
PART_NPIS = 500_000
# 'lines': several service lines per (npi, year, program), NPPES-style empty strings, owner
# forests up to six levels. 'production': what the production tables can hold (issue 10):
# one row per (npi, year, program), missing provider values NULL, and every owner of an
# SNF's chain owning the SNF directly (ownership_snf holds only owner -> SNF edges).
Layout = Literal["lines", "production"]


@dataclass(frozen=True)
class Population:
    """Index sets into the NPI array."""

    npi: np.ndarray  # int64, every NPI (providers first, then payment-only NPIs)
    n_providers: int
    is_org: np.ndarray
    snf: np.ndarray  # indices of SNF providers (aligned with SNF entities)
    chain: np.ndarray  # indices of owner-branded chain providers


class Draw:
    """One generation: its settings and the one random generator the tables draw from in turn.
    The order of the draws is the dataset (same seed, same bytes): dataset.py keeps it."""

    def __init__(
        self, out_dir: Path, providers: int, seed: int, layout: Layout, part_npis: int
    ) -> None:
        self.out = out_dir
        self.n = providers
        self.seed = seed
        self.part_npis = part_npis
        self.rng = np.random.default_rng(seed)
        self.production = layout == "production"

    def owner_type(self, kind: str) -> str:
        """corporate_entities has no type column: production-layout owners are organisations."""
        return "Organization" if self.production else kind

    @property
    def taxonomy_codes(self) -> list[str]:
        codes = [c for c, _ in vocab.INDIVIDUAL_TAXONOMIES + vocab.ORGANISATION_TAXONOMIES]
        return [*codes, vocab.SNF_TAXONOMY]


def weighted(rng: np.random.Generator, pairs: list[tuple[str, int]], size: int) -> np.ndarray:
    weights = np.array([w for _, w in pairs], dtype=float)
    return rng.choice(len(pairs), size=size, p=weights / weights.sum())


def strings(words: list[str], idx: np.ndarray) -> pl.Series:
    return pl.Series(words).gather(idx)


def join_words(*parts: pl.Series | str) -> pl.Series:
    """Element-wise 'a b c' of equally long Series (plain strings repeat)."""
    return pl.select(
        pl.concat_str([pl.lit(p) for p in parts], separator=" ").alias("text")
    ).to_series()


def npis(rng: np.random.Generator, count: int) -> np.ndarray:
    draws = np.unique(rng.integers(100_000_000, 300_000_000, size=int(count * 1.05) + 64))
    while draws.size < count:
        extra = rng.integers(100_000_000, 300_000_000, size=count)
        draws = np.unique(np.concatenate([draws, extra]))
    base = rng.permutation(draws)[:count]
    return pl.select(make_npi(pl.Series(base, dtype=pl.Int64))).to_series().to_numpy()


def write(table: pa.Table | pl.DataFrame, path: Path) -> None:
    arrow = table.to_arrow() if isinstance(table, pl.DataFrame) else table
    pq.write_table(arrow, path, compression="zstd", row_group_size=1_000_000)
