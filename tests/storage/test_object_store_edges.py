"""The S3 run store at its edges, on the real server: what an adversarial review of issue 25
found (the watchdog's evidence, outages past the window, a claim whose answer was lost,
folder markers, bad URLs, fork), each pinned by a test."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import obstore
import polars as pl
import pytest
from obstore.store import S3Store

from scoring.config import Settings
from scoring.errors import RunFileError, RunStateError, StoreUnreachableError
from scoring.inputs.contract import table_files
from scoring.inputs.dataset import entries
from scoring.runs import object_store
from scoring.runs.ledger import RunLedger
from scoring.runs.object_store import ObjectRunStore, split_url
from scoring.runs.roots import run_at
from scoring.runs.store import RunPaths
from tests.devservices import PrivateS3
from workers.watchdog import last_progress, unfinished_runs


@pytest.fixture
def short_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLAIDEX_S3_OUTAGE_WINDOW of 2 s for this test's clients."""
    monkeypatch.setenv("CLAIDEX_S3_OUTAGE_WINDOW", "2")
    object_store._outage_window.cache_clear()
    object_store._client.cache_clear()
    yield
    object_store._outage_window.cache_clear()
    object_store._client.cache_clear()


def test_the_watchdog_sees_an_s3_runs_ledger_and_request(s3_env: dict[str, str]) -> None:
    """newest_write counts the object a key names (a listing never returns it) as well as
    what lies below it: an S3 fleet run in flight is found, and it is not idle."""
    root = f"{s3_env['root']}/fleet"
    paths = run_at(root, "r1")
    paths.store.write_json("request.json", {"run_id": "r1"})
    RunLedger(paths).set_status("scoring")
    assert time.time() - paths.store.newest_write(["ledger.json"]) < 60
    assert time.time() - paths.store.newest_write(["request.json"]) < 60
    assert time.time() - last_progress(paths) < 60
    RunLedger(run_at(root, "done")).set_status("published")
    run_at(root, "done").store.write_json("request.json", {"run_id": "done"})
    assert [p.run_id for p in unfinished_runs(root)] == ["r1"]


def test_a_heartbeat_outlives_an_outage_past_the_window(
    s3_env: dict[str, str], s3_server: PrivateS3, short_window: None
) -> None:
    ledger = RunLedger(run_at(s3_env["root"], "beats"))
    with ledger.heartbeat("batch-00001", worker="w", every=0.3):
        time.sleep(0.5)
        s3_server.restart(down=4.0)  # twice the window: a beat fails for good meanwhile
        time.sleep(1.5)
        beats = ledger.heartbeats()
        names = [t.name for t in threading.enumerate()]
    assert "heartbeat-batch-00001" in names, "the beating stopped with the outage"
    assert beats["batch-00001"]["age"] < 2.0, beats


def test_parquet_reads_ride_out_a_restart_and_then_say_unreachable(
    s3_env: dict[str, str], s3_server: PrivateS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """polars' own reads (a bucket of a stage file) retry within the window like obstore's;
    past it the error is transient (StoreUnreachableError), never a final RunFileError."""
    store = ObjectRunStore(f"{s3_env['root']}/reads")
    frame = pl.DataFrame({"b": [1, 1, 2], "v": [1.0, 2.0, 3.0]})
    store.write_bucketed("stage/p.parquet", frame, "b")
    thread = threading.Thread(target=s3_server.restart, kwargs={"down": 3.0})
    thread.start()
    time.sleep(0.3)
    assert store.read_bucket(["stage/p.parquet"], "b", 1)["v"].to_list() == [1.0, 2.0]
    thread.join()
    monkeypatch.setenv("CLAIDEX_S3_OUTAGE_WINDOW", "1")
    object_store._outage_window.cache_clear()
    object_store._client.cache_clear()
    try:
        assert s3_server.process is not None
        s3_server.process.terminate()
        s3_server.process.wait(timeout=30)
        with pytest.raises(StoreUnreachableError, match=r"p\.parquet"):
            store.read_bucket(["stage/p.parquet"], "b", 1)
    finally:
        s3_server.restart()
        object_store._outage_window.cache_clear()
        object_store._client.cache_clear()


def test_a_claim_whose_own_create_was_answered_exists_is_still_ours(
    s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """object_store retries a PUT whose answer was lost; the server then says 'exists'. The
    claim's nonce, read back, tells our own create from another caller's."""
    store = ObjectRunStore(f"{s3_env['root']}/claims")

    class Fixed:
        hex = "n" * 32

    monkeypatch.setattr(object_store.uuid, "uuid4", lambda: Fixed())
    assert store.claim("request.json", {"run_id": "x"})
    assert store.claim("request.json", {"run_id": "x"})  # our retry: the nonce is ours
    monkeypatch.undo()
    assert not store.claim("request.json", {"run_id": "x"})  # another caller


def test_folder_markers_are_no_stray_parts(
    s3_env: dict[str, str], s3_server: PrivateS3, sample_dataset: Path
) -> None:
    prefix = s3_env["root"].split("/", 3)[3]
    url = s3_server.upload(sample_dataset, f"{prefix}/marked")
    client = S3Store(s3_server.bucket, config=s3_server.storage_options())
    obstore.put(client, f"{prefix}/marked/", b"")  # "Create folder" in the S3 console
    obstore.put(client, f"{prefix}/marked/payments_combined/", b"")
    parts = table_files(url, "payments_combined")
    assert parts and all(str(p).endswith(".parquet") for p in parts)
    assert all(not str(f).endswith("/") for f, _ in entries(url))


@pytest.mark.parametrize(
    "url", ["s3://b/a//c", "s3://b/x\ny", "s3://b/a/./c", "s3://", "s3://b/\t"]
)
def test_malformed_urls_are_refused_in_one_line(url: str) -> None:
    with pytest.raises(RunStateError, match="is not an s3://bucket/prefix URL") as raised:
        split_url(url)
    assert "\n" not in str(raised.value).replace("\\n", "")


def test_a_run_needs_a_prefix_and_settings_keep_s3_urls() -> None:
    with pytest.raises(RunStateError, match="names a bucket and a prefix"):
        RunPaths("s3://claidex")
    assert RunPaths("s3://claidex/r1").sibling("r2").url == "s3://claidex/r2"
    cfg = Settings(run_root="s3://claidex/runs/", scheduled_data="s3://claidex/data/")
    assert (cfg.run_root, cfg.scheduled_data) == ("s3://claidex/runs", "s3://claidex/data")


def test_a_dead_endpoint_is_one_transient_line_for_datasets_too(
    s3_env: dict[str, str], short_window: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    object_store._client.cache_clear()
    started = time.monotonic()
    with pytest.raises(StoreUnreachableError) as raised:
        entries("s3://claidex/anything")
    assert time.monotonic() - started < 30
    assert "\n" not in str(raised.value) and "s3://claidex/anything" in str(raised.value)
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in str(raised.value)


def test_concurrent_publishes_count_every_one(s3_env: dict[str, str]) -> None:
    ledger = RunLedger(run_at(s3_env["root"], "counted"))

    def publish() -> None:
        for _ in range(5):
            ledger.set_status_counted("published", "publish_count")

    threads = [threading.Thread(target=publish) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ledger.read()["publish_count"] == 40


def _client_in_child(bucket: str, queue: multiprocessing.Queue) -> None:
    try:
        object_store.bucket_client(bucket)
    except RunFileError as exc:  # pragma: no cover - not this error
        queue.put(f"other: {exc}")
    except RunStateError as exc:
        queue.put(str(exc))
    else:
        queue.put("no error")


def test_a_forked_child_of_an_s3_process_is_refused_instead_of_hanging(
    s3_env: dict[str, str],
) -> None:
    ObjectRunStore(f"{s3_env['root']}/fork").exists("x")  # this process's runtime is live
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_client_in_child, args=("claidex", queue))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    assert "forked from one that had used the object store" in queue.get(timeout=5)
