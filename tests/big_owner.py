"""One owner of thousands of SNFs, added to a generated dataset (issue 26): the holding
companies and REITs of CMS ownership data. Tests and ops/bench use it."""

from __future__ import annotations

from pathlib import Path

import polars as pl

OWNER = "BIGOWNER"


def add_big_owner(
    data: Path, snfs: int, *, matching: bool, seed: int = 0, companies: bool = False
) -> pl.DataFrame:
    """`snfs` SNFs owned by one owner (itself owned by a holding above it). `matching`:
    each SNF is named as a provider is, so that provider matches it and is a chain provider
    of every SNF of the owner (step 4: a provider's name holding a group entity's); else
    names no provider's is contained in. `companies`: the owner holds each SNF through a
    company of its own (owner -> company -> SNF), as CMS ownership data often shows. The
    SNFs added."""
    entities = pl.read_parquet(data / "entities.parquet")
    ownership = pl.read_parquet(data / "ownership.parquet")
    ids = [f"BIGSNF{i:06d}" for i in range(snfs)]
    if matching:
        providers = pl.read_parquet(data / "providers.parquet")
        named = providers.filter(pl.col("display_name").str.len_chars() > 6)
        picked = named.sample(n=min(snfs, named.height), seed=seed)["display_name"].to_list()
        names = [picked[i % len(picked)] for i in range(snfs)]
    else:
        names = [f"QX{i:06d} ZZ FACILITY" for i in range(snfs)]
    added = pl.DataFrame({"entity_id": ids, "name": names, "entity_type": ["SNF"] * snfs})
    owners = pl.DataFrame(
        {
            "entity_id": [OWNER, "BIGHOLDING"],
            "name": ["QZ GRAND OWNER GROUP", "QZ HOLDING TRUST"],
            "entity_type": ["OWNER", "OWNER"],
        }
    )
    middle = [f"BIGCO{i:06d}" for i in range(snfs)] if companies else []
    firms = pl.DataFrame(
        {"entity_id": middle, "name": [f"QZ FIRM {i}" for i in range(len(middle))],
         "entity_type": ["LLC"] * len(middle)}
    )  # fmt: skip
    pl.concat([entities, owners, firms, added]).write_parquet(data / "entities.parquet")
    if companies:
        edges = pl.DataFrame(
            {
                "owner_id": ["BIGHOLDING", *[OWNER] * snfs, *middle],
                "owned_id": [OWNER, *middle, *ids],
            }
        )
    else:
        edges = pl.DataFrame(
            {"owner_id": ["BIGHOLDING", *[OWNER] * snfs], "owned_id": [OWNER, *ids]}
        )
    pl.concat([ownership, edges]).write_parquet(data / "ownership.parquet")
    return added
