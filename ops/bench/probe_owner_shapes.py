"""Chain counts alone (no run) for two owner shapes at unit level, one process each:
`coowners N`: N owners of one holding that owns N SNFs (every SNF has N owners above it:
the chains table itself is N^2); `layer N`: an owner holding 3N SNFs through N companies.

    .venv/bin/python ops/bench/probe_owner_shapes.py coowners 1000
"""

import resource
import sys
import time

import polars as pl

from scoring.config import Settings
from scoring.methodology.components.ownership import (
    OwnershipGraph,
    chain_capture,
    chain_closures,
    chain_member_counts,
)

shape, n = sys.argv[1], int(sys.argv[2])
ents = [("H", "holding trust", "OWNER"), ("O", "grand owner", "OWNER")]
edges = []
provs = []
if shape == "coowners":
    for w in range(n):
        ents.append((f"W{w}", f"partner {w} xq", "OWNER"))
        edges.append((f"W{w}", "H"))
    for i in range(n):
        ents.append((f"S{i}", f"facility {i} zz", "SNF"))
        edges.append(("H", f"S{i}"))
        provs.append((i, f"facility {i} zz"))
else:
    for k in range(n):
        ents.append((f"M{k}", f"company {k} yy", "OWNER"))
        edges.append(("O", f"M{k}"))
        for j in range(3):
            i = k * 3 + j
            ents.append((f"S{i}", f"facility {i} zz", "SNF"))
            edges.append((f"M{k}", f"S{i}"))
            provs += [(2 * i, f"facility {i} zz"), (2 * i + 1, f"facility {i} zz clinic")]
g = OwnershipGraph(
    pl.LazyFrame(ents, schema=["entity_id", "name", "entity_type"], orient="row"),
    pl.LazyFrame(edges, schema=["owner_id", "owned_id"], orient="row"),
    pl.LazyFrame({"entity_id": []}, schema={"entity_id": pl.String}),
)
t = time.perf_counter()
snfs = pl.LazyFrame({"snf": [e for e, _, ty in ents if ty == "SNF"]})
chains, closures = chain_closures(snfs, g, Settings())
cap = (
    chain_capture(
        closures.lazy(),
        pl.LazyFrame(provs, schema=["npi", "display_name"], orient="row"),
        g.entities,
    )
    .collect()
    .with_columns(pl.lit(False).alias("actively_excluded"))
)
counts = chain_member_counts(chains, cap)
print(
    shape,
    n,
    "rows",
    chains.height,
    closures.height,
    cap.height,
    "max members",
    counts["members"].max(),
    "s",
    round(time.perf_counter() - t, 2),
    "peak MB",
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
)
