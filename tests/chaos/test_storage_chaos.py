"""The storage layer under injected faults: transfers complete with identical bytes,
short reads are never accepted, and persistent failures end at once with a named error."""

from __future__ import annotations

import os
import time

import pytest
from chaos_helpers import RATE, SEEDS
from faultproxy import DOWNLOADS, TRANSIENT, Rule
from storage_helpers import write_tree

from jobcommon import storage
from jobcommon.errors import NotFoundError, PermissionDeniedError, UsageError


def _tree(root) -> dict[str, bytes]:
    files = {
        "saved_model.pb": os.urandom(20_000),
        "variables/variables.index": os.urandom(300),
        "variables/variables.data-00000-of-00001": os.urandom(400_000),
        "assets/vocab.txt": b"a\nb\n",
        "schema.json": b'{"features": []}',
    }
    files.update({f"shards/part-{i:03d}": os.urandom(1000 + i) for i in range(5)})
    return write_tree(root, files)


def _no_partials(root) -> bool:
    return not [f for _, _, files in os.walk(root) for f in files if ".partial" in f]


@pytest.mark.parametrize("seed", SEEDS)
def test_round_trips_and_trees_survive_a_fifth_of_requests_failing(
    faulty_gcs, tmp_path, seed, request
):
    gcs = faulty_gcs([Rule(rate=RATE, faults=TRANSIENT)], seed)
    bucket = gcs.new_bucket(request.node.name)
    files = _tree(str(tmp_path / "src"))
    small = {f"{bucket}/small/{i}.bin": os.urandom(500 + 37 * i) for i in range(6)}
    with gcs.via_proxy():
        for uri, data in small.items():
            storage.write_bytes(uri, data)
        storage.write_text(f"{bucket}/small/text.txt", "héllo\n")
        assert storage.read_text(f"{bucket}/small/text.txt") == "héllo\n"
        read_back = {uri: storage.read_bytes(uri) for uri in small}
        assert storage.glob(f"{bucket}/small/*.bin") == sorted(small)
        storage.copy_tree(str(tmp_path / "src"), f"{bucket}/up")
        storage.copy_tree(f"{bucket}/up", f"{bucket}/copied")
        storage.copy_tree(f"{bucket}/copied", str(tmp_path / "down"))
    assert read_back == small
    for rel, data in files.items():
        assert (tmp_path / "down" / rel).read_bytes() == data, rel
    assert _no_partials(tmp_path / "down")
    with gcs.direct():  # what landed, seen without faults
        assert sorted(storage.list_files(f"{bucket}/up")) == sorted(
            f"{bucket}/up/{rel}" for rel in files
        )
        for rel, data in files.items():
            assert storage.read_bytes(f"{bucket}/copied/{rel}") == data
    counts = gcs.proxy.counts
    assert gcs.proxy.faults >= 0.1 * counts["requests"], dict(counts)
    assert len({k for k in counts if k in TRANSIENT}) >= 3, dict(counts)


@pytest.mark.parametrize("seed", SEEDS)
def test_multi_chunk_upload_and_download_are_identical_under_faults(
    faulty_gcs, tmp_path, seed, request
):
    gcs = faulty_gcs([Rule(rate=RATE, faults=TRANSIENT)], seed)
    bucket = gcs.new_bucket(request.node.name)
    data = os.urandom(storage.UPLOAD_CHUNK_BYTES * 2 + 4321)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    with gcs.via_proxy():
        storage.upload_file(str(local), f"{bucket}/big.bin")
        storage.download_file(f"{bucket}/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    assert _no_partials(tmp_path)
    with gcs.direct():
        assert storage.read_bytes(f"{bucket}/big.bin") == data
    # Three chunks of a resumable upload plus the download and metadata calls.
    assert gcs.proxy.requests_matching(r"upload_id=", "POST|PUT") >= 3


def test_truncated_downloads_are_detected_and_retried(faulty_gcs, tmp_path, request):
    gcs = faulty_gcs([])
    bucket = gcs.new_bucket(request.node.name)
    data = {f"{bucket}/t/{i}.bin": os.urandom(50_000 + i) for i in range(4)}
    with gcs.direct():
        for uri, payload in data.items():
            storage.write_bytes(uri, payload)
    # Every object read is cut short the first times it is sent: a reader that trusted
    # what arrived would get half the bytes.
    gcs.proxy.configure([Rule(rate=1.0, faults=("truncate",), path=DOWNLOADS, limit=4)])
    with gcs.via_proxy():
        assert {uri: storage.read_bytes(uri) for uri in data} == data
        storage.copy_tree(f"{bucket}/t", str(tmp_path / "down"))
    assert gcs.proxy.counts["truncate"] == 4
    for uri, payload in data.items():
        assert (tmp_path / "down" / uri.rsplit("/", 1)[-1]).read_bytes() == payload
    assert _no_partials(tmp_path)


def _stalled_round_trips(gcs, bucket: str) -> None:
    payloads = {f"{bucket}/s/{i}": os.urandom(2000 + i) for i in range(5)}
    with gcs.via_proxy():
        for uri, data in payloads.items():
            storage.write_bytes(uri, data)
        assert {uri: storage.read_bytes(uri) for uri in payloads} == payloads


# The proxy holds a stalled request for 10 minutes unless the client hangs up: only the
# client's own timeout can end it, and stall-dropped counts the times it did.
LONG_STALL = 600.0


def test_stalled_requests_time_out_and_are_retried(faulty_gcs, monkeypatch, request):
    monkeypatch.setenv("STORAGE_REQUEST_TIMEOUT", "2")
    gcs = faulty_gcs([Rule(rate=0.5, faults=("stall",), stall_seconds=LONG_STALL, limit=2)], seed=5)
    _stalled_round_trips(gcs, gcs.new_bucket(request.node.name))
    assert gcs.proxy.counts["stall"] == 2
    assert gcs.proxy.counts["stall-dropped"] == 2


def test_the_default_request_timeout_applies_when_none_is_set(faulty_gcs, monkeypatch, request):
    monkeypatch.delenv("STORAGE_REQUEST_TIMEOUT", raising=False)
    assert storage.request_timeout() == storage.DEFAULT_REQUEST_TIMEOUT == 60.0
    # The same stalls with nothing set: the default (shortened here) must end them.
    monkeypatch.setattr(storage, "DEFAULT_REQUEST_TIMEOUT", 2.0)
    gcs = faulty_gcs([Rule(rate=0.5, faults=("stall",), stall_seconds=LONG_STALL, limit=2)], seed=5)
    _stalled_round_trips(gcs, gcs.new_bucket(request.node.name))
    assert gcs.proxy.counts["stall-dropped"] == 2


def test_a_slow_transfer_that_keeps_moving_is_not_cut(faulty_gcs, monkeypatch, request):
    # The timeout bounds silence, not duration: a download whose answer takes 5 s to arrive,
    # a piece every half second, must complete on its first request with a 2 s timeout.
    monkeypatch.setenv("STORAGE_REQUEST_TIMEOUT", "2")
    gcs = faulty_gcs([])
    bucket = gcs.new_bucket(request.node.name)
    data = os.urandom(300_000)
    with gcs.direct():
        storage.write_bytes(f"{bucket}/slow.bin", data)
    gcs.proxy.configure(
        [Rule(rate=1.0, faults=("trickle",), path=DOWNLOADS, stall_seconds=5, limit=1)]
    )
    with gcs.via_proxy():
        assert storage.read_bytes(f"{bucket}/slow.bin") == data
    assert gcs.proxy.counts["trickle"] == 1
    assert gcs.proxy.counts["trickle-dropped"] == 0
    assert gcs.proxy.requests_matching(DOWNLOADS) == 1


@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_a_bad_request_timeout_is_a_usage_error(monkeypatch, value):
    monkeypatch.setenv("STORAGE_REQUEST_TIMEOUT", value)
    with pytest.raises(UsageError, match="STORAGE_REQUEST_TIMEOUT.*positive number of seconds"):
        storage.request_timeout()


def _operations(bucket: str, tmp_path) -> dict:
    local = tmp_path / "f.bin"
    local.write_bytes(os.urandom(storage.UPLOAD_CHUNK_BYTES + 10))
    (tmp_path / "tree").mkdir(exist_ok=True)
    (tmp_path / "tree" / "a.txt").write_text("a")
    return {
        "read": lambda: storage.read_bytes(f"{bucket}/exists.txt"),
        "write": lambda: storage.write_bytes(f"{bucket}/new.txt", b"x"),
        "upload-resumable": lambda: storage.upload_file(str(local), f"{bucket}/big.bin"),
        "download": lambda: storage.download_file(f"{bucket}/exists.txt", str(tmp_path / "d")),
        "copy-tree-up": lambda: storage.copy_tree(str(tmp_path / "tree"), f"{bucket}/tree"),
        "copy-tree-down": lambda: storage.copy_tree(f"{bucket}/dir", str(tmp_path / "down")),
        "glob": lambda: storage.glob(f"{bucket}/dir/*"),
        "list-files": lambda: storage.list_files(f"{bucket}/dir"),
    }


@pytest.mark.parametrize(
    "fault,error", [("403", PermissionDeniedError), ("404", NotFoundError)], ids=["403", "gone"]
)
def test_persistent_failure_is_a_named_error_at_once(faulty_gcs, tmp_path, fault, error, request):
    gcs = faulty_gcs([])
    bucket = gcs.new_bucket(request.node.name)
    with gcs.direct():
        storage.write_text(f"{bucket}/exists.txt", "here")
        storage.write_text(f"{bucket}/dir/a.txt", "a")
    gcs.proxy.configure([Rule(rate=1.0, faults=(fault,), path=bucket[len("gs://") :])])
    for name, operation in _operations(bucket, tmp_path).items():
        before = gcs.proxy.counts["requests"]
        started = time.monotonic()
        with gcs.via_proxy(), pytest.raises(error) as caught:
            operation()
        elapsed = time.monotonic() - started
        attempts = gcs.proxy.counts["requests"] - before
        assert bucket in str(caught.value), (name, str(caught.value))
        assert elapsed < 10, (name, elapsed)
        assert 1 <= attempts <= 3, (name, attempts)
    assert not (tmp_path / "d").exists() and not (tmp_path / "down").exists()


def test_a_bucket_that_does_not_exist_is_a_named_error_at_once(faulty_gcs, tmp_path, request):
    gcs = faulty_gcs([])
    missing = "gs://chaos-no-such-bucket-7f3a"
    started = time.monotonic()
    with gcs.via_proxy():
        for operation in _operations(missing, tmp_path).values():
            with pytest.raises(NotFoundError, match=missing):
                operation()
    assert time.monotonic() - started < 30
    assert gcs.proxy.counts["requests"] <= 3 * len(_operations(missing, tmp_path))
