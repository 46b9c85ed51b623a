"""The providers: the NPI population, taxonomy and state, display names (chain providers named
after an owner) and the NPPES-like provider records."""

from __future__ import annotations

import numpy as np
import polars as pl

from claidex.dev.sample import vocabulary as vocab
from claidex.dev.sample.common import Draw, Population, join_words, npis, strings, weighted


def population(gen: Draw) -> Population:
    n, rng = gen.n, gen.rng
    payment_only = max(1, n // 200)
    npi = npis(rng, n + payment_only)
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


def attributes(gen: Draw, pop: Population) -> tuple[np.ndarray, np.ndarray]:
    """Taxonomy code index into a combined list and state index, per NPI."""
    rng, total = gen.rng, pop.npi.size
    ind = weighted(rng, vocab.INDIVIDUAL_TAXONOMIES, total)
    org = weighted(rng, vocab.ORGANISATION_TAXONOMIES, total) + len(vocab.INDIVIDUAL_TAXONOMIES)
    taxonomy = np.where(pop.is_org, org, ind)
    taxonomy[pop.snf] = len(gen.taxonomy_codes) - 1
    return taxonomy, weighted(rng, vocab.STATES, total)


def display_names(
    gen: Draw, pop: Population, snf_names: pl.Series, chain_names: pl.Series
) -> pl.Series:
    rng, n = gen.rng, pop.n_providers
    person = join_words(
        strings(vocab.FIRST_NAMES, rng.integers(0, len(vocab.FIRST_NAMES), n)),
        strings(vocab.LAST_NAMES, rng.integers(0, len(vocab.LAST_NAMES), n)),
    ).to_numpy()
    org = join_words(
        strings(vocab.LAST_NAMES, rng.integers(0, len(vocab.LAST_NAMES), n)),
        strings(vocab.ORG_KINDS, rng.integers(0, len(vocab.ORG_KINDS), n)),
        strings(vocab.ORG_SUFFIXES, rng.integers(0, len(vocab.ORG_SUFFIXES), n)),
    ).to_numpy()
    names = np.where(pop.is_org[:n], org, person).astype(object)
    names[pop.snf] = snf_names.str.strip_suffix(" LLC").to_numpy()
    names[pop.chain] = chain_names.to_numpy()
    names[rng.random(n) < 0.0005] = ""
    return pl.Series("display_name", names, dtype=pl.String)


def chain_display_names(
    gen: Draw, pop: Population, entities: pl.DataFrame, chain_owner: np.ndarray
) -> pl.Series:
    """'<owner name> PHARMACY LLC' and the like: providers that contain an owner's name."""
    owner_of_chain = pl.DataFrame({"entity_id": chain_owner}).join(
        entities.select("entity_id", "name"), on="entity_id", how="left", maintain_order="left"
    )["name"]
    kind_idx = gen.rng.integers(0, len(vocab.CHAIN_PROVIDER_KINDS), pop.chain.size)
    return join_words(owner_of_chain, strings(vocab.CHAIN_PROVIDER_KINDS, kind_idx), "LLC")


def providers_table(
    gen: Draw,
    pop: Population,
    names: pl.Series,
    taxonomy: np.ndarray,
    state: np.ndarray,
    listed: np.ndarray,
) -> tuple[pl.DataFrame, tuple[np.ndarray, np.ndarray]]:
    """NPPES-like provider records (payment-only NPIs are left out on purpose), and per
    NPI whether its record carries a taxonomy and a state."""
    rng, n = gen.rng, pop.n_providers
    is_excluded = np.zeros(pop.npi.size, dtype=bool)
    is_excluded[listed] = True
    tax_text = pl.Series(gen.taxonomy_codes).gather(taxonomy[:n]).to_numpy().astype(object)
    no_tax = rng.random(n) < 0.01
    tax_text[no_tax] = None if gen.production else ""
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
