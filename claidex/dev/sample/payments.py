"""payments_combined: provider-year-program rows split into service lines, with the planted
billing anomalies, drawn and written one part of NPIs at a time."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from claidex.dev.sample import vocabulary as vocab
from claidex.dev.sample.common import YEARS, Draw, Population, write


def payment_parts(
    gen: Draw,
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
    for part, lo in enumerate(range(0, total, gen.part_npis)):
        hi = min(total, lo + gen.part_npis)
        rng = gen.rng if part == 0 else np.random.default_rng([gen.seed, part])
        table, tax_price = payment_part(
            gen, rng, pop, lo, hi, taxonomy, state, planted, on_record, tax_price
        )
        yield table


def payment_part(
    gen: Draw,
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
        tax_price = np.exp(rng.normal(np.log(80), 0.6, len(gen.taxonomy_codes)))
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
    if gen.production:  # one row per (npi, year, program), as the program tables key it
        lines = np.ones(who_r.size, dtype=lines.dtype)
    row = np.repeat(np.arange(who_r.size), lines)
    share = rng.gamma(1.5, 1.0, row.size)
    share /= np.bincount(row, weights=share)[row]
    npi_i, year_i, prog_i = who_r[row], year_r[row], prog[row]
    line_claims = np.maximum(1.0, np.round(claims[row] * share))
    ppc = price[npi_i] * np.array([0.7, 1.0, 1.3])[prog_i] * np.exp(rng.normal(0, 0.1, row.size))
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
    tax_row[other] = rng.integers(0, len(gen.taxonomy_codes) - 1, int(other.sum()))
    state_row = state[npi_i].copy()
    has_tax, has_state = on_record[0][npi_i], on_record[1][npi_i]
    medicaid = prog_i == vocab.PROGRAMS.index("Medicaid")
    unknown_tax, unknown_state = len(gen.taxonomy_codes), len(vocab.STATES)
    tax_row = np.where(has_tax, taxonomy[npi_i], np.where(medicaid, unknown_tax, tax_row))
    state_row = np.where(has_state, state_row, np.where(medicaid, unknown_state, state_row))
    order = rng.permutation(row.size)
    npi_of_part = pop.npi[lo:hi]
    dictionary = pa.array([*gen.taxonomy_codes, vocab.UNKNOWN])
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
            "state": pa.DictionaryArray.from_arrays(state_row[order].astype(np.int16), states).cast(
                pa.string()
            ),
        }
    )
    return table, tax_price


def write_payments(gen: Draw, parts: Iterator[pa.Table]) -> int:
    """One file when the data fits one part (the small default), else a directory of
    parts written as they are drawn; returns the rows written."""
    single = gen.out / "payments_combined.parquet"
    folder = gen.out / "payments_combined"
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
            write(first, folder / "part-00000.parquet")
        write(table, folder / f"part-{index:05d}.parquet")
        rows += table.num_rows
    rows += first.num_rows
    if not folder.is_dir():
        write(first, single)
    return rows
