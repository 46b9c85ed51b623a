"""Deterministic CMS-like sample dataset (SPEC §3) with planted anomalies and their ground truth.

Everything is vectorised with numpy; the only Python loops run over ownership
levels (at most six) and output files, never over providers or rows.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from claidex import vocabulary as vocab
from scoring.npi import make_npi

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


def _weighted(rng: np.random.Generator, pairs: list[tuple[str, int]], size: int) -> np.ndarray:
    weights = np.array([w for _, w in pairs], dtype=float)
    return rng.choice(len(pairs), size=size, p=weights / weights.sum())


def _strings(words: list[str], idx: np.ndarray) -> pl.Series:
    return pl.Series(words).gather(idx)


def _join_words(*parts: pl.Series | str) -> pl.Series:
    """Element-wise 'a b c' of equally long Series (plain strings repeat)."""
    return pl.select(
        pl.concat_str([pl.lit(p) for p in parts], separator=" ").alias("text")
    ).to_series()


def _npis(rng: np.random.Generator, count: int) -> np.ndarray:
    draws = np.unique(rng.integers(100_000_000, 300_000_000, size=int(count * 1.05) + 64))
    while draws.size < count:
        extra = rng.integers(100_000_000, 300_000_000, size=count)
        draws = np.unique(np.concatenate([draws, extra]))
    base = rng.permutation(draws)[:count]
    return pl.select(make_npi(pl.Series(base, dtype=pl.Int64))).to_series().to_numpy()


def _write(table: pa.Table | pl.DataFrame, path: Path) -> None:
    arrow = table.to_arrow() if isinstance(table, pl.DataFrame) else table
    pq.write_table(arrow, path, compression="zstd", row_group_size=1_000_000)


class _Generator:
    def __init__(
        self, out_dir: Path, providers: int, seed: int, layout: Layout, part_npis: int
    ) -> None:
        self.out = out_dir
        self.n = providers
        self.seed = seed
        self.part_npis = part_npis
        self.rng = np.random.default_rng(seed)
        self.production = layout == "production"

    # --- providers -----------------------------------------------------------
    def owner_type(self, kind: str) -> str:
        """corporate_entities has no type column: production-layout owners are organisations."""
        return "Organization" if self.production else kind

    def population(self) -> Population:
        n, rng = self.n, self.rng
        payment_only = max(1, n // 200)
        npi = _npis(rng, n + payment_only)
        n_snf = max(3, n // 120)
        n_chain = max(3, n // 150)
        is_org = np.zeros(n + payment_only, dtype=bool)
        is_org[: n_snf + n_chain] = True
        is_org[n_snf + n_chain : n] = rng.random(n - n_snf - n_chain) < 0.27
        return Population(
            npi=npi,
            n_providers=n,
            is_org=is_org,
            snf=np.arange(n_snf),
            chain=np.arange(n_snf, n_snf + n_chain),
        )

    def attributes(self, pop: Population) -> tuple[np.ndarray, np.ndarray]:
        """Taxonomy code index into a combined list and state index, per NPI."""
        rng, total = self.rng, pop.npi.size
        ind = _weighted(rng, vocab.INDIVIDUAL_TAXONOMIES, total)
        org = _weighted(rng, vocab.ORGANISATION_TAXONOMIES, total) + len(
            vocab.INDIVIDUAL_TAXONOMIES
        )
        taxonomy = np.where(pop.is_org, org, ind)
        taxonomy[pop.snf] = len(self.taxonomy_codes) - 1
        return taxonomy, _weighted(rng, vocab.STATES, total)

    @property
    def taxonomy_codes(self) -> list[str]:
        codes = [c for c, _ in vocab.INDIVIDUAL_TAXONOMIES + vocab.ORGANISATION_TAXONOMIES]
        return [*codes, vocab.SNF_TAXONOMY]

    def display_names(
        self, pop: Population, snf_names: pl.Series, chain_names: pl.Series
    ) -> pl.Series:
        rng, n = self.rng, pop.n_providers
        person = _join_words(
            _strings(vocab.FIRST_NAMES, rng.integers(0, len(vocab.FIRST_NAMES), n)),
            _strings(vocab.LAST_NAMES, rng.integers(0, len(vocab.LAST_NAMES), n)),
        ).to_numpy()
        org = _join_words(
            _strings(vocab.LAST_NAMES, rng.integers(0, len(vocab.LAST_NAMES), n)),
            _strings(vocab.ORG_KINDS, rng.integers(0, len(vocab.ORG_KINDS), n)),
            _strings(vocab.ORG_SUFFIXES, rng.integers(0, len(vocab.ORG_SUFFIXES), n)),
        ).to_numpy()
        names = np.where(pop.is_org[:n], org, person).astype(object)
        names[pop.snf] = snf_names.str.strip_suffix(" LLC").to_numpy()
        names[pop.chain] = chain_names.to_numpy()
        names[rng.random(n) < 0.0005] = ""
        return pl.Series("display_name", names, dtype=pl.String)

    # --- ownership graph -----------------------------------------------------
    def graph(self, pop: Population) -> tuple[pl.DataFrame, pl.DataFrame, np.ndarray, np.ndarray]:
        """Entities and OWNS edges: per chain a forest up to six owner levels, some owners shared.

        Returns entities, edges, the tree of every SNF, and the owner entity each
        chain provider is branded after.
        """
        rng = self.rng
        n_snf = pop.snf.size
        n_trees = max(1, n_snf // 6)
        tree = rng.integers(0, n_trees, n_snf)
        depth = rng.choice(
            np.arange(1, MAX_OWNER_LEVELS + 1), size=n_trees, p=[0.15, 0.3, 0.25, 0.15, 0.1, 0.05]
        )
        brand_a = rng.integers(0, len(vocab.BRAND_FIRST), n_trees)
        brand_b = rng.integers(0, len(vocab.BRAND_SECOND), n_trees)
        brand = _join_words(
            _strings(vocab.BRAND_FIRST, brand_a), _strings(vocab.BRAND_SECOND, brand_b)
        )
        position = pl.Series(tree).rank("ordinal").to_numpy() - 1  # unique slot per SNF
        snf_id = pl.Series([f"SNF{i:07d}" for i in range(n_snf)])
        snf_name = _join_words(
            brand.gather(tree),
            _strings(vocab.SNF_KINDS, rng.integers(0, len(vocab.SNF_KINDS), n_snf)),
            "OF",
            _strings(vocab.CITIES, rng.integers(0, len(vocab.CITIES), n_snf)),
            "LLC",
        )
        depths = pl.DataFrame({"tree": np.arange(n_trees), "depth": depth})
        levels = [pl.DataFrame({"entity_id": snf_id, "tree": tree, "slot": position, "level": 0})]
        edges = []
        child = levels[0]
        for level in range(1, MAX_OWNER_LEVELS + 1):
            alive = child.join(depths, on="tree").filter(pl.col("depth") >= level).drop("depth")
            if alive.is_empty():
                break
            parent = alive.with_columns(
                (pl.col("slot") // (2 + (pl.col("tree") % 2))).alias("pslot")
            ).with_columns(
                pl.format("OWN{}-{}-{}", pl.col("tree"), pl.lit(level), pl.col("pslot")).alias(
                    "owner_id"
                )
            )
            edges.append(parent.select("owner_id", owned_id="entity_id"))
            child = (
                parent.select(
                    pl.col("owner_id").alias("entity_id"),
                    "tree",
                    pl.col("pslot").alias("slot"),
                    pl.lit(level).alias("level"),
                )
                .unique("entity_id", keep="first")
                .sort("entity_id")
            )
            levels.append(child)
        owners = pl.concat(levels[1:])
        kinds = pl.Series(vocab.OWNER_KINDS)
        owners = owners.with_columns(
            _join_words(
                brand.gather(owners["tree"]),
                kinds.gather((owners["level"] + owners["slot"]) % len(kinds)),
            ).alias("name")
        )
        # A few holding companies own the roots of several chains (shared owners across trees).
        roots = owners.sort("level", descending=True).unique("tree", keep="first").sort("tree")
        n_mega = max(1, n_trees // 50)
        chosen = roots.sample(n=max(1, roots.height // 20), seed=int(rng.integers(1 << 30)))
        mega = chosen.with_columns(
            pl.format("MEGA{}", pl.col("tree") % n_mega).alias("owner_id")
        ).select("owner_id", owned_id="entity_id")
        mega_entities = (
            mega.select(pl.col("owner_id").alias("entity_id")).unique().sort("entity_id")
        )
        mega_entities = mega_entities.with_columns(
            pl.format("{} NATIONAL HEALTHCARE HOLDINGS", pl.col("entity_id").str.slice(4)).alias(
                "name"
            )
        )
        entities = pl.concat(
            [
                pl.DataFrame({"entity_id": snf_id, "name": snf_name, "entity_type": "SNF"}),
                owners.select(
                    "entity_id", "name", pl.lit(self.owner_type("OWNER")).alias("entity_type")
                ),
                mega_entities.select(
                    "entity_id", "name", pl.lit(self.owner_type("HOLDING")).alias("entity_type")
                ),
            ]
        )
        all_edges = pl.concat([*edges, mega]).unique().sort("owner_id", "owned_id")
        if self.production:
            all_edges = _owners_of_snfs(all_edges, snf_id)
        # Chain providers carry an owner's name ("<owner> PHARMACY LLC").
        branded = owners.filter(pl.col("level") <= 2)
        pick = rng.integers(0, branded.height, pop.chain.size)
        return entities, all_edges, tree, branded["entity_id"].to_numpy()[pick]

    # --- payments ------------------------------------------------------------
    def payments(
        self,
        pop: Population,
        taxonomy: np.ndarray,
        state: np.ndarray,
        planted: dict[str, np.ndarray],
        on_record: tuple[np.ndarray, np.ndarray],
    ) -> Iterator[pa.Table]:
        """payments_combined rows, one table per `part_npis` NPIs (memory bounded by the part,
        not the population); `on_record` says whose provider record has taxonomy / state.

        The first part draws from the dataset's generator as a single-part dataset always
        did (same seed, same bytes); each later part from its own (seed, part) generator."""
        total = pop.npi.size
        tax_price = np.empty(0)  # the first part draws it
        for part, lo in enumerate(range(0, total, self.part_npis)):
            hi = min(total, lo + self.part_npis)
            rng = self.rng if part == 0 else np.random.default_rng([self.seed, part])
            table, tax_price = self._payment_part(
                rng, pop, lo, hi, taxonomy, state, planted, on_record, tax_price
            )
            yield table

    def _payment_part(
        self,
        rng: np.random.Generator,
        pop: Population,
        lo: int,
        hi: int,
        taxonomy_all: np.ndarray,
        state_all: np.ndarray,
        planted_all: dict[str, np.ndarray],
        on_record_all: tuple[np.ndarray, np.ndarray],
        tax_price: np.ndarray,
    ) -> tuple[pa.Table, np.ndarray]:
        """The rows of NPIs [lo, hi): indices below are local to the part."""
        total = hi - lo

        def local(index: np.ndarray) -> np.ndarray:
            return index[(index >= lo) & (index < hi)] - lo

        planted = {kind: local(members) for kind, members in planted_all.items()}
        snf, chain = local(pop.snf), local(pop.chain)
        taxonomy, state = taxonomy_all[lo:hi], state_all[lo:hi]
        on_record = (on_record_all[0][lo:hi], on_record_all[1][lo:hi])
        pays = rng.random(total) < 0.85
        pays[snf] = rng.random(snf.size) < 0.97
        pays[chain] = rng.random(chain.size) < 0.95
        pays[max(0, pop.n_providers - lo) :] = True
        for members in planted.values():
            pays[members] = True
        # Years: an active span with gaps; some bill a single year.
        # Most providers are still billing in the last year; others stopped earlier.
        last = np.where(rng.random(total) < 0.8, YEARS.size - 1, rng.integers(0, YEARS.size, total))
        span = np.minimum(last + 1, 1 + rng.geometric(0.12, total))
        start = last - span + 1
        mask = (np.arange(YEARS.size) >= start[:, None]) & (np.arange(YEARS.size) <= last[:, None])
        mask &= rng.random(mask.shape) > 0.08
        single = rng.random(total) < 0.06
        only = rng.integers(0, YEARS.size, total)
        mask[single] = np.arange(YEARS.size) == only[single][:, None]
        forced = np.concatenate(list(planted.values()))
        mask[forced] = np.arange(YEARS.size) >= YEARS.size - 6
        mask[~pays] = False
        # Programs billed by each provider.
        p_prog = np.array([0.45, 0.88, 0.6])
        programs = rng.random((total, 3)) < p_prog
        none = ~programs.any(axis=1)
        programs[none, 1] = True
        programs[planted["program_concentration"]] = True
        prog_w = rng.gamma(2.0, 1.0, (total, 3)) * programs * np.array([0.7, 1.0, 0.8])
        prog_w /= prog_w.sum(axis=1, keepdims=True)
        # Provider scale and price level.
        org = pop.is_org[lo:hi]
        claims_base = np.exp(
            rng.normal(np.where(org, np.log(1500), np.log(420)), np.where(org, 1.3, 1.1))
        )
        if tax_price.size == 0:  # drawn by the first part, shared by all
            tax_price = np.exp(rng.normal(np.log(80), 0.6, len(self.taxonomy_codes)))
        price = tax_price[taxonomy] * np.exp(rng.normal(0, 0.35, total))
        trend = np.exp(np.cumsum(rng.normal(0.03, 0.12, (total, YEARS.size)), axis=1))
        # Expand to provider-year-program rows, then to service lines.
        who, year_idx = np.nonzero(mask)
        pyp = np.repeat(np.arange(who.size), 3)
        prog = np.tile(np.arange(3), who.size)
        keep = programs[who[pyp], prog] & (rng.random(pyp.size) > 0.05)
        pyp, prog = pyp[keep], prog[keep]
        who_r, year_r = who[pyp], year_idx[pyp]
        last3 = year_r >= YEARS.size - 3
        conc = np.isin(who_r, planted["program_concentration"])
        drop = conc & last3 & (prog != 1)
        who_r, year_r, prog = who_r[~drop], year_r[~drop], prog[~drop]
        claims = claims_base[who_r] * trend[who_r, year_r] * prog_w[who_r, prog]
        claims *= np.where(
            np.isin(who_r, planted["program_concentration"]) & (year_r >= YEARS.size - 3), 2.0, 1.0
        )
        lines = 1 + rng.poisson(1.8, who_r.size)
        if self.production:  # one row per (npi, year, program), as the program tables key it
            lines = np.ones(who_r.size, dtype=lines.dtype)
        row = np.repeat(np.arange(who_r.size), lines)
        share = rng.gamma(1.5, 1.0, row.size)
        share /= np.bincount(row, weights=share)[row]
        npi_i, year_i, prog_i = who_r[row], year_r[row], prog[row]
        line_claims = np.maximum(1.0, np.round(claims[row] * share))
        ppc = (
            price[npi_i] * np.array([0.7, 1.0, 1.3])[prog_i] * np.exp(rng.normal(0, 0.1, row.size))
        )
        recent = year_i >= YEARS.size - 3
        outlier = np.isin(npi_i, planted["billing_outlier"]) & recent
        ppc = np.where(outlier, ppc * rng.uniform(5, 12, row.size), ppc)
        growth = np.isin(npi_i, planted["explosive_growth"])
        boost = np.where(growth & (year_i == YEARS.size - 2), 4.0, 1.0)
        boost = np.where(growth & (year_i == YEARS.size - 1), 16.0, boost)
        line_claims = np.round(line_claims * boost)
        payments = np.round(line_claims * ppc, 2)
        benes = np.maximum(
            1.0, np.round(line_claims / (1 + np.exp(rng.normal(np.log(2), 0.5, row.size))))
        )
        # Row attributes as payments_combined_v derives them: the provider record's value,
        # else the Medicare / Part D extract's own (rarely another code), else 'Unknown'.
        tax_row = taxonomy[npi_i].copy()
        other = rng.random(row.size) < 0.01
        tax_row[other] = rng.integers(0, len(self.taxonomy_codes) - 1, int(other.sum()))
        state_row = state[npi_i].copy()
        has_tax, has_state = on_record[0][npi_i], on_record[1][npi_i]
        medicaid = prog_i == vocab.PROGRAMS.index("Medicaid")
        unknown_tax, unknown_state = len(self.taxonomy_codes), len(vocab.STATES)
        tax_row = np.where(has_tax, taxonomy[npi_i], np.where(medicaid, unknown_tax, tax_row))
        state_row = np.where(has_state, state_row, np.where(medicaid, unknown_state, state_row))
        order = rng.permutation(row.size)
        npi_of_part = pop.npi[lo:hi]
        dictionary = pa.array([*self.taxonomy_codes, vocab.UNKNOWN])
        states = pa.array([*(s for s, _ in vocab.STATES), vocab.UNKNOWN])
        table = pa.table(
            {
                "npi": pc.cast(pa.array(npi_of_part[npi_i][order]), pa.string()),
                "year": pa.array(YEARS[year_i][order].astype(np.int32)),
                "program": pa.DictionaryArray.from_arrays(
                    prog_i[order].astype(np.int8), pa.array(vocab.PROGRAMS)
                ).cast(pa.string()),
                "payments": pa.array(payments[order]),
                "claims": pa.array(line_claims[order]),
                "beneficiaries": pa.array(benes[order]),
                "taxonomy": pa.DictionaryArray.from_arrays(
                    tax_row[order].astype(np.int16), dictionary
                ).cast(pa.string()),
                "state": pa.DictionaryArray.from_arrays(
                    state_row[order].astype(np.int16), states
                ).cast(pa.string()),
            }
        )
        return table, tax_price

    # --- tables ---------------------------------------------------------------
    def chain_display_names(
        self, pop: Population, entities: pl.DataFrame, chain_owner: np.ndarray
    ) -> pl.Series:
        """'<owner name> PHARMACY LLC' and the like: providers that contain an owner's name."""
        owner_of_chain = pl.DataFrame({"entity_id": chain_owner}).join(
            entities.select("entity_id", "name"), on="entity_id", how="left", maintain_order="left"
        )["name"]
        kind_idx = self.rng.integers(0, len(vocab.CHAIN_PROVIDER_KINDS), pop.chain.size)
        return _join_words(owner_of_chain, _strings(vocab.CHAIN_PROVIDER_KINDS, kind_idx), "LLC")

    def planted_sets(self, pop: Population) -> dict[str, np.ndarray]:
        """Disjoint sets of ordinary providers for the three billing anomalies."""
        ordinary = np.arange(pop.snf.size + pop.chain.size, pop.n_providers)
        per_kind = max(1, int(pop.n_providers * PLANTED_SHARE))
        picks = self.rng.choice(ordinary, size=3 * per_kind, replace=False)
        return {
            "billing_outlier": picks[:per_kind],
            "explosive_growth": picks[per_kind : 2 * per_kind],
            "program_concentration": picks[2 * per_kind :],
        }

    def taint_chains(
        self,
        pop: Population,
        entities: pl.DataFrame,
        snf_tree: np.ndarray,
        chain_owner: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, pl.DataFrame]:
        """Excluded chain providers in a few chains (an owner entity excluded in half of them).

        Returns the excluded chain providers, the SNFs of tainted chains, entity exclusions.
        """
        rng = self.rng
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

    def exclusions(
        self, pop: Population, excluded_chain: np.ndarray
    ) -> tuple[pl.DataFrame, np.ndarray]:
        """LEIE: ~1 % of NPIs, some reinstated, plus rows without an NPI; and who is listed."""
        rng, n = self.rng, pop.n_providers
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
                "excldate": pl.Series(
                    np.datetime64("2000-01-01") + days.astype("timedelta64[D]")
                ).cast(pl.Date),
                "reinstated": pl.Series(np.concatenate([reinstated, rng.random(n_blank) < 0.15])),
            }
        )
        return table, listed

    def providers_table(
        self,
        pop: Population,
        names: pl.Series,
        taxonomy: np.ndarray,
        state: np.ndarray,
        listed: np.ndarray,
    ) -> tuple[pl.DataFrame, tuple[np.ndarray, np.ndarray]]:
        """NPPES-like provider records (payment-only NPIs are left out on purpose), and per
        NPI whether its record carries a taxonomy and a state."""
        rng, n = self.rng, pop.n_providers
        is_excluded = np.zeros(pop.npi.size, dtype=bool)
        is_excluded[listed] = True
        tax_text = pl.Series(self.taxonomy_codes).gather(taxonomy[:n]).to_numpy().astype(object)
        no_tax = rng.random(n) < 0.01
        tax_text[no_tax] = None if self.production else ""
        state_codes = pl.Series([s for s, _ in vocab.STATES])
        state_text = state_codes.gather(state[:n]).to_numpy().astype(object)
        no_state = rng.random(n) < 0.005
        state_text[no_state] = None
        on_record = np.zeros((2, pop.npi.size), dtype=bool)
        on_record[0, :n], on_record[1, :n] = ~no_tax, ~no_state
        entity_type = pl.Series(np.where(pop.is_org[:n], 2, 1), dtype=pl.Int8)
        entity_type = entity_type.scatter(np.nonzero(rng.random(n) < 0.002)[0], None)
        providers = pl.DataFrame(
            {
                "npi": pl.Series(pop.npi[:n].astype(str)),
                "entity_type_code": entity_type,
                "display_name": names,
                "taxonomy_1": pl.Series(tax_text, dtype=pl.String),
                "state": pl.Series(state_text, dtype=pl.String),
                "is_excluded": pl.Series(is_excluded[:n]),
            }
        ).sample(fraction=1.0, shuffle=True, seed=int(rng.integers(1 << 30)))
        return providers, (on_record[0], on_record[1])

    def write_payments(self, parts: Iterator[pa.Table]) -> int:
        """One file when the data fits one part (the small default), else a directory of
        parts written as they are drawn; returns the rows written."""
        single = self.out / "payments_combined.parquet"
        folder = self.out / "payments_combined"
        single.unlink(missing_ok=True)
        if folder.is_dir():
            shutil.rmtree(folder)
        rows = 0
        for index, table in enumerate(parts):
            if index == 0:
                first = table
                continue
            if index == 1:
                folder.mkdir()
                _write(first, folder / "part-00000.parquet")
            _write(table, folder / f"part-{index:05d}.parquet")
            rows += table.num_rows
        rows += first.num_rows
        if not folder.is_dir():
            _write(first, single)
        return rows

    def run(self) -> dict[str, object]:
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        pop = self.population()
        taxonomy, state = self.attributes(pop)
        entities, edges, snf_tree, chain_owner = self.graph(pop)
        chain_names = self.chain_display_names(pop, entities, chain_owner)
        snf_names = entities.filter(pl.col("entity_type") == "SNF")["name"]
        names = self.display_names(pop, snf_names, chain_names)
        planted = self.planted_sets(pop)
        excluded_chain, tainted_snfs, entity_exclusions = self.taint_chains(
            pop, entities, snf_tree, chain_owner
        )
        planted["excluded_chain"] = tainted_snfs
        exclusions, listed = self.exclusions(pop, excluded_chain)
        providers, on_record = self.providers_table(pop, names, taxonomy, state, listed)
        payment_rows = self.write_payments(self.payments(pop, taxonomy, state, planted, on_record))
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
            _write(table, self.out / f"{name}.parquet")
        return {
            "providers": pop.n_providers,
            "payment_rows": payment_rows,
            "entities": entities.height,
            "ownership_edges": edges.height,
            "exclusions": exclusions.height,
            "planted": {k: int(v.size) for k, v in planted.items()},
            "seconds": round(time.perf_counter() - started, 1),
        }


def _owners_of_snfs(edges: pl.DataFrame, snf_id: pl.Series) -> pl.DataFrame:
    """Every (ancestor, SNF) pair of the forest: each owner of a chain owns the SNF directly."""
    closure = edges.filter(pl.col("owned_id").is_in(snf_id.implode()))
    frontier = closure
    for _ in range(MAX_OWNER_LEVELS + 1):  # loops over owner levels, never over rows
        frontier = edges.join(
            frontier.select(pl.col("owner_id").alias("mid"), "owned_id"),
            left_on="owned_id",
            right_on="mid",
        ).select("owner_id", pl.col("owned_id_right").alias("owned_id"))
        if frontier.is_empty():
            break
        closure = pl.concat([closure, frontier])
    return closure.unique().sort("owner_id", "owned_id")


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
    return _Generator(Path(out_dir), providers, seed, layout, part_npis).run()


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
