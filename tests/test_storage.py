"""The storage layer against a live fake-gcs-server: round trips, globs, errors, atomicity."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from storage_helpers import write_tree
from tcp_proxy import TcpProxy

from jobcommon import storage
from jobcommon.errors import InvalidURIError, NotFoundError
from jobcommon.localgcs import LocalGCS, free_port


def test_bytes_and_text_round_trip(bucket):
    payload = bytes(range(256)) * 100
    storage.write_bytes(f"{bucket}/a/b.bin", payload)
    assert storage.read_bytes(f"{bucket}/a/b.bin") == payload
    storage.write_text(f"{bucket}/a/c.txt", "héllo\n")
    assert storage.read_text(f"{bucket}/a/c.txt") == "héllo\n"
    assert storage.exists(f"{bucket}/a/c.txt")
    assert not storage.exists(f"{bucket}/a/missing.txt")


def test_local_and_fuse_paths_use_the_same_calls(tmp_path):
    # /gcs/<bucket>/... on Vertex is a FUSE mount: plain local paths to this layer.
    path = str(tmp_path / "gcs" / "bucket" / "x.json")
    storage.write_text(path, "{}")
    assert storage.read_text(path) == "{}"
    assert storage.glob(str(tmp_path / "gcs" / "*" / "*.json")) == [path]
    assert not [p for p in os.listdir(os.path.dirname(path)) if p.endswith(".partial")]


def _make_tree(root):
    return write_tree(
        root,
        {
            "model/saved_model.pb": os.urandom(1000),
            "model/variables/variables.index": b"index",
            "model/variables/variables.data-00000-of-00001": os.urandom(300_000),
            "schema.json": b'{"a": 1}',
        },
    )


def test_directory_tree_round_trip_both_ways(bucket, tmp_path):
    files = _make_tree(str(tmp_path / "src"))
    written = storage.copy_tree(str(tmp_path / "src"), f"{bucket}/export/1")
    assert sorted(written) == sorted(f"{bucket}/export/1/{rel}" for rel in files)
    storage.copy_tree(f"{bucket}/export/1", f"{bucket}/export/2")
    storage.copy_tree(f"{bucket}/export/2", str(tmp_path / "back"))
    for rel, data in files.items():
        assert (tmp_path / "back" / rel).read_bytes() == data
    assert storage.list_dir(f"{bucket}/export") == [f"{bucket}/export/1", f"{bucket}/export/2"]


def test_glob_patterns(bucket):
    for name in ["data/train-0.tfrecord", "data/train-1.tfrecord", "data/eval-0.tfrecord"]:
        storage.write_bytes(f"{bucket}/{name}", b"x")
    storage.write_bytes(f"{bucket}/data/sub/train-2.tfrecord", b"x")
    assert storage.glob(f"{bucket}/data/train-*.tfrecord") == [
        f"{bucket}/data/train-0.tfrecord",
        f"{bucket}/data/train-1.tfrecord",
    ]
    assert len(storage.glob(f"{bucket}/data/**/train-*.tfrecord")) == 3
    assert storage.glob(f"{bucket}/data/none-*") == []


def test_missing_bucket_and_object_are_named_errors(bucket, gcs):
    with pytest.raises(NotFoundError, match=f"{bucket}/nope.txt"):
        storage.read_bytes(f"{bucket}/nope.txt")
    with pytest.raises(NotFoundError, match="gs://no-such-bucket-x"):
        storage.glob("gs://no-such-bucket-x/*.json")
    with pytest.raises(NotFoundError, match="gs://no-such-bucket-x/f"):
        storage.write_bytes("gs://no-such-bucket-x/f", b"1")
    with pytest.raises(NotFoundError):
        storage.download_file(f"{bucket}/nope.txt", "/tmp/never-written")
    assert not os.path.exists("/tmp/never-written")


@pytest.mark.parametrize("uri", ["gs://", "gs://UPPER/x", "gs:/one-slash/x", "s3://b/x", ""])
def test_malformed_uris_are_rejected(uri):
    with pytest.raises(InvalidURIError):
        storage.read_bytes(uri)


def test_file_larger_than_one_upload_chunk(bucket, tmp_path):
    size = storage.UPLOAD_CHUNK_BYTES * 2 + 12345
    data = os.urandom(size)
    local = tmp_path / "big.bin"
    local.write_bytes(data)
    storage.upload_file(str(local), f"{bucket}/big.bin")
    storage.download_file(f"{bucket}/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    storage.write_bytes(f"{bucket}/big2.bin", data)
    assert storage.read_bytes(f"{bucket}/big2.bin") == data


def test_concurrent_writers_never_mix_contents(bucket):
    payloads = {i: bytes([i]) * (200_000 + i) for i in range(8)}

    def write(i: int) -> None:
        for _ in range(3):
            storage.write_bytes(f"{bucket}/shared.bin", payloads[i])
            storage.write_bytes(f"{bucket}/own-{i}.bin", payloads[i])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, payloads))
    final = storage.read_bytes(f"{bucket}/shared.bin")
    assert final in payloads.values()
    for i, data in payloads.items():
        assert storage.read_bytes(f"{bucket}/own-{i}.bin") == data


UPLOADER = """
import sys
from jobcommon import storage
storage.upload_file(sys.argv[1], sys.argv[2])
print("finished", flush=True)
"""


def test_interrupted_upload_leaves_no_object(tmp_path):
    """SIGKILL the uploading process midway: nothing appears under the final name."""
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(storage.UPLOAD_CHUNK_BYTES * 5))
    server_port = free_port()
    killed = threading.Event()
    proc: list[subprocess.Popen] = []

    def kill_midway(total: int) -> None:
        if total > storage.UPLOAD_CHUNK_BYTES * 2 and not killed.is_set():
            killed.set()
            proc[0].send_signal(signal.SIGKILL)

    proxy = TcpProxy(server_port, kill_midway)
    gcs = LocalGCS(
        str(tmp_path / "data"),
        ["cut"],
        port=server_port,
        external_url=f"http://localhost:{proxy.port}",
    )
    with gcs:
        env = gcs.env() | {"STORAGE_EMULATOR_HOST": f"http://localhost:{proxy.port}"}
        proc.append(
            subprocess.Popen(
                [sys.executable, "-c", UPLOADER, str(big), "gs://cut/final.bin"],
                env=env,
                stdout=subprocess.PIPE,
            )
        )
        out, _ = proc[0].communicate(timeout=120)
        assert killed.is_set() and proc[0].returncode == -signal.SIGKILL, out
        assert b"finished" not in out
        assert proxy.upstream_bytes < big.stat().st_size
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint)
            assert storage.glob("gs://cut/*") == []
        # The same upload, not cut, lands whole.
        subprocess.run(
            [sys.executable, "-c", UPLOADER, str(big), "gs://cut/final.bin"],
            env=gcs.env(),
            check=True,
            capture_output=True,
        )
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("STORAGE_EMULATOR_HOST", gcs.endpoint)
            assert storage.read_bytes("gs://cut/final.bin") == big.read_bytes()
    proxy.close()
