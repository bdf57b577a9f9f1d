#!/usr/bin/env bash
# Image test: build the trainer, batch and executor images with buildah (no Docker daemon, no
# registry) and smoke-test each one against an embedded GCS on loopback.
#
#   bash docker/test-images.sh            # or: make images
#
# What it does:
#   1. a Debian bookworm rootfs (debootstrap, cached in $CACHE_DIR) becomes the local base
#      image that stands in for the CUDA base (BASE_IMAGE);
#   2. a tiny stand-in for the Beam SDK image provides /opt/apache/beam/boot (BEAM_SDK_IMAGE);
#   3. docker/Dockerfile is built for its three targets;
#   4. each image is inspected (non-root user, no secrets, no build inputs or test data left);
#   5. as the image's own user, each image runs --help of its entry points, then a smoke run
#      against fake-gcs-server: trainer trains 1 epoch on tiny data, batch scores instances
#      with the local runner, executor runs a small notebook; results are checked on the host.
# It prints image sizes and timings and writes them to docker/RESULTS.md.
#
# Environment: CACHE_DIR (rootfs cache, default /var/tmp/cloud-ml-jobs-base), WORK_DIR
# (scratch, default a new temp dir), PYTHON (host Python with the project installed, default
# .venv/bin/python), KEEP_IMAGES=0 to remove the built images at the end, TARGETS to build a
# subset (default "trainer batch executor"), SKIP_BUILD=1 to reuse already built images,
# FRESH=1 (what CI sets) to reuse nothing from an earlier run: the base images are removed
# and rebuilt from a new debootstrap in WORK_DIR (removed at the end), and the targets are
# always rebuilt, so every run proves the build from scratch.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK_DIR=${WORK_DIR:-$(mktemp -d /var/tmp/cloud-ml-jobs-images.XXXXXX)}
FRESH=${FRESH:-0}
if [[ "$FRESH" == 1 ]]; then
  CACHE_DIR=$WORK_DIR/base-cache
else
  CACHE_DIR=${CACHE_DIR:-/var/tmp/cloud-ml-jobs-base}
fi
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
TARGETS=${TARGETS:-"trainer batch executor"}
KEEP_IMAGES=${KEEP_IMAGES:-1}
SKIP_BUILD=${SKIP_BUILD:-0}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
BASE_TAG=localhost/cloud-ml-jobs-base:bookworm
BEAM_TAG=localhost/cloud-ml-jobs-beam-sdk-standin:test
BUILDAH=(buildah --storage-driver vfs)
RESULTS_MD=${RESULTS_MD:-$REPO/docker/RESULTS.md}

mkdir -p "$WORK_DIR/logs" "$WORK_DIR/smoke"
declare -A SECONDS_OF=()
declare -a SUMMARY=()
FAILURES=0
GCS_PID=""
POOL_PID=""
CONTAINERS=()
T0=$(date +%s)

log() { printf '[images %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }

cleanup() {
  local c
  for c in "${CONTAINERS[@]}"; do
    "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1 || true
  done
  # buildah leaves a working container behind for the FROM-only beam-sdk stage.
  "${BUILDAH[@]}" rm cloud-ml-jobs-beam-sdk-standin-working-container >/dev/null 2>&1 || true
  if [[ -n "$GCS_PID" ]]; then
    kill "$GCS_PID" 2>/dev/null || true
    wait "$GCS_PID" 2>/dev/null || true
  fi
  if [[ "$FRESH" == 1 ]]; then
    # The run's base images and rootfs cache go too; the logs stay in WORK_DIR/logs.
    "${BUILDAH[@]}" rmi "$BASE_TAG" "$BEAM_TAG" >/dev/null 2>&1 || true
    rm -rf --one-file-system "$CACHE_DIR" || true
  fi
}
trap cleanup EXIT

# Runs a named step in a subshell with errexit on, logging to $WORK_DIR/logs/<name>.log, and
# records its time and result; later steps still run when one fails.
step() {
  local name=$1
  shift
  local started rc logf="$WORK_DIR/logs/$name.log"
  started=$(date +%s)
  log "step $name ..."
  set +e
  (
    set -e
    "$@"
  ) >"$logf" 2>&1
  rc=$?
  set -e
  SECONDS_OF[$name]=$(($(date +%s) - started))
  if [[ $rc -eq 0 ]]; then
    SUMMARY+=("| $name | passed | ${SECONDS_OF[$name]} s |")
    log "step $name passed in ${SECONDS_OF[$name]} s"
  else
    SUMMARY+=("| $name | FAILED (exit $rc) | ${SECONDS_OF[$name]} s |")
    FAILURES=$((FAILURES + 1))
    log "step $name FAILED (exit $rc) after ${SECONDS_OF[$name]} s; last lines of $logf:"
    tail -n 25 "$logf" | sed 's/^/    /' >&2
  fi
  return 0
}

# ---------------------------------------------------------------------------------------------
# Tools and base images
# ---------------------------------------------------------------------------------------------
ensure_tools() {
  local missing=()
  command -v buildah >/dev/null 2>&1 || missing+=(buildah)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if ((${#missing[@]})); then
    [[ $(id -u) -eq 0 ]] || die "need ${missing[*]}: run as root or install them first"
    log "installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  [[ -x "$PYTHON" ]] || die "no Python at $PYTHON: run 'make venv' or set PYTHON"
  "$PYTHON" -c "import jobcommon.localgcs" || die "$PYTHON cannot import jobcommon: make venv"
}

build_base_image() {
  local rootfs="$CACHE_DIR/rootfs"
  if [[ "$FRESH" == 1 ]]; then
    # Not an image store of the run's own: with --root outside the default, buildah 1.28
    # leaves each RUN --mount bind target behind in the image as an empty file.
    "${BUILDAH[@]}" rmi "$BASE_TAG" "$BEAM_TAG" >/dev/null 2>&1 || true
  fi
  if ! "${BUILDAH[@]}" inspect --type image "$BASE_TAG" >/dev/null 2>&1; then
    echo "new" >"$WORK_DIR/base-image-state"
    if [[ ! -f "$CACHE_DIR/rootfs.complete" ]]; then
      rm -rf "$rootfs"
      mkdir -p "$CACHE_DIR"
      debootstrap --variant=minbase \
        --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR"
      # Drop apt lists and caches: the stand-in base should be as lean as the CUDA runtime.
      rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
      touch "$CACHE_DIR/rootfs.complete"
    fi
    local ctx="$WORK_DIR/base-context"
    mkdir -p "$ctx"
    tar -C "$rootfs" -cf "$ctx/rootfs.tar" .
    printf 'FROM scratch\nADD rootfs.tar /\nCMD ["/bin/bash"]\n' >"$ctx/Containerfile"
    "${BUILDAH[@]}" bud --isolation chroot -t "$BASE_TAG" -f "$ctx/Containerfile" "$ctx"
    rm -rf "$ctx"
  fi
  # Stand-in for apache/beam_python3.11_sdk: the real image cannot be pulled here. Its boot
  # program checks that the worker environment of the image it lands in can run Beam.
  if "${BUILDAH[@]}" inspect --type image "$BEAM_TAG" >/dev/null 2>&1; then
    return 0
  fi
  local beam_ctx="$WORK_DIR/beam-context"
  mkdir -p "$beam_ctx"
  cat >"$beam_ctx/boot" <<'EOF'
#!/bin/sh
# Stand-in for Beam's boot program (image test only): prove the SDK worker can start here.
set -e
echo "beam boot stand-in: args: $*"
exec python -c "import apache_beam, apache_beam.runners.worker.sdk_worker_main as m; print('apache_beam', apache_beam.__version__, 'worker module', m.__name__)"
EOF
  chmod 0755 "$beam_ctx/boot"
  printf 'FROM scratch\nCOPY boot /opt/apache/beam/boot\n' >"$beam_ctx/Containerfile"
  "${BUILDAH[@]}" bud --isolation chroot -t "$BEAM_TAG" -f "$beam_ctx/Containerfile" "$beam_ctx"
}

build_target() {
  local target=$1
  # A rebuild would otherwise leave the previous image behind, untagged (GBs with vfs).
  "${BUILDAH[@]}" rmi "localhost/cloud-ml-jobs-$target:test" >/dev/null 2>&1 || true
  "${BUILDAH[@]}" bud --isolation chroot \
    --volume "$CA_BUNDLE:$CA_BUNDLE:ro" \
    --build-arg "BASE_IMAGE=$BASE_TAG" \
    --build-arg "BEAM_SDK_IMAGE=$BEAM_TAG" \
    --build-arg "REVISION=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    --target "$target" \
    -f "$REPO/docker/Dockerfile" \
    -t "localhost/cloud-ml-jobs-$target:test" \
    "$REPO"
}

# ---------------------------------------------------------------------------------------------
# Inspection: non-root user, no secrets, no build inputs or test data left in the image
# ---------------------------------------------------------------------------------------------
image_json() { # image key... -> JSON of that part of `buildah inspect` (buildah 1.28's
  # templates have no json function, so Python picks the part)
  local image=$1
  shift
  "${BUILDAH[@]}" inspect --type image "$image" | "$PYTHON" -c 'import json, sys
node = json.load(sys.stdin)
for key in sys.argv[1:]:
    node = node.get(key) if isinstance(node, dict) else None
print(json.dumps(node))' "$@"
}

image_config() { # image field -> JSON of the image's OCI config field
  image_json "$1" OCIv1 config "$2"
}

image_user() { # target -> the USER of its image
  image_config "localhost/cloud-ml-jobs-$1:test" User | "$PYTHON" -c 'import json, sys
print(json.load(sys.stdin) or "")'
}

declare -A CTR_OF=()

new_container() { # target: a working container of the image, in the main shell (removed at exit)
  local name="cmj-test-$1-$$"
  "${BUILDAH[@]}" rm "$name" >/dev/null 2>&1 || true
  "${BUILDAH[@]}" from --name "$name" "localhost/cloud-ml-jobs-$1:test" >/dev/null
  CONTAINERS+=("$name")
  CTR_OF[$1]=$name
}

scan_rootfs() { # mounted rootfs: no test data, build inputs or private keys left behind
  "$PYTHON" - "$1" <<'EOF'
import glob, os, re, sys

root = sys.argv[1]
site = os.path.join(root, "opt/venv/lib/python3.11/site-packages")
problems = []

# The project wheel holds our four packages only, nothing from tests/, bench/ or demo/.
records = glob.glob(os.path.join(site, "cloud_ml_jobs-*.dist-info", "RECORD"))
if len(records) != 1:
    problems.append(f"expected one installed cloud-ml-jobs, found {len(records)}")
for record in records:
    for line in open(record):
        top = line.split(",", 1)[0].split("/", 1)[0]
        if top not in ("jobcommon", "trainer", "batch", "executor") and not top.endswith(
            (".dist-info", "__pycache__")
        ):
            problems.append(f"the project wheel installed {line.split(',', 1)[0]}")
for pkg in ("jobcommon", "trainer", "batch", "executor"):
    for d, _, files in os.walk(os.path.join(site, pkg)):
        for f in files:
            if not f.endswith((".py", ".pyc", ".ipynb", ".json", ".typed")) or f == "conftest.py":
                problems.append(f"non-code file in {pkg}: {os.path.join(d, f)[len(root):]}")

# Home, tmp and the top level hold nothing from the build or the tests.
for d in ("home/app", "root", "tmp", "var/tmp"):
    for base, _, files in os.walk(os.path.join(root, d)):
        for f in files:
            if f not in (".bashrc", ".profile", ".bash_logout"):
                problems.append(f"file left in /{d}: {os.path.join(base, f)[len(root):]}")
for d in ("src", "wheels", "smoke", "workspace", "data", ".localgcs"):
    if os.path.exists(os.path.join(root, d)):
        problems.append(f"unexpected top-level directory /{d}")

# Private keys: a PEM block with key material, or a service-account JSON, in any file outside
# the system's own /usr (third-party sources only mention the PEM header as a constant).
pem = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----\s*[A-Za-z0-9+/=]{64}")
sa = re.compile(rb'"private_key"\s*:\s*"-----BEGIN [A-Z ]*KEY-----\\n[A-Za-z0-9+/=]{64}')
# Published wheels (tornado, ...) ship their own test suites with throwaway keys.
third_party_tests = re.compile(r"/site-packages/(?!(?:jobcommon|trainer|batch|executor)/).*/tests?/")
for top in ("opt", "home", "root", "etc", "tmp", "srv", "var"):
    for base, _, files in os.walk(os.path.join(root, top)):
        for f in files:
            path = os.path.join(base, f)
            try:
                if os.path.islink(path) or os.path.getsize(path) > 2_000_000:
                    continue
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            if third_party_tests.search(path):
                continue
            if pem.search(data) or sa.search(data):
                problems.append(f"private key material in {path[len(root):]}")

print("\n".join(problems) or "rootfs scan: clean")
sys.exit(1 if problems else 0)
EOF
}

inspect_image() {
  local target=$1
  local image="localhost/cloud-ml-jobs-$target:test" user
  user=$(image_user "$target")
  echo "user: '$user'"
  [[ -n "$user" ]] || { echo "no USER set"; return 1; }
  [[ "${user%%:*}" != "0" && "${user%%:*}" != "root" ]] || { echo "runs as root"; return 1; }

  # Environment and history must not carry credentials.
  local env_json history
  env_json=$(image_config "$image" Env)
  history=$(image_json "$image" OCIv1 history)
  echo "env: $env_json"
  if grep -Eiq '(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS|API_KEY|PRIVATE_KEY)' \
    <<<"$env_json$history"; then
    echo "credential-like names in the image env or history"
    return 1
  fi
  if grep -q "$CA_BUNDLE:" <<<"$history"; then
    echo "the build-time CA mount is recorded in the history"
    return 1
  fi

  local ctr=${CTR_OF[$target]} mnt
  mnt=$("${BUILDAH[@]}" mount "$ctr")
  local bad=0
  # The proxy's CA bundle was only mounted for the build; the image keeps its own.
  if cmp -s "$CA_BUNDLE" "$mnt$CA_BUNDLE"; then
    echo "the host's CA bundle leaked into the image"
    bad=1
  fi
  for p in /src /wheels /tmp/requirements.txt /tmp/wheels /root/.cache/pip \
    /home/app/.cache /home/app/.config/gcloud /root/.config/gcloud; do
    if [[ -e "$mnt$p" ]] && [[ -n "$(ls -A "$mnt$p" 2>/dev/null || echo file)" ]]; then
      echo "build input left in the image: $p"
      bad=1
    fi
  done
  scan_rootfs "$mnt" || bad=1
  "${BUILDAH[@]}" umount "$ctr" >/dev/null
  echo "uid check:"
  in_image "$target" id
  [[ $(in_image "$target" id -u) != 0 ]] || { echo "the image user is uid 0"; bad=1; }
  return "$bad"
}

# ---------------------------------------------------------------------------------------------
# Running commands in an image as its own user, pointed at the embedded GCS
# ---------------------------------------------------------------------------------------------
in_image() { # target cmd... : run as the image's USER, in its WORKDIR, with /smoke mounted
  local target=$1
  shift
  image_run_cmd "$target"
  "${RUN_CMD[@]}" "$@"
}

RUN_CMD=()
image_run_cmd() { # target [buildah run option...] -> RUN_CMD: the command line of in_image
  local target=$1 user
  shift
  user=$(image_user "$target")
  RUN_CMD=("${BUILDAH[@]}" run --isolation chroot --user "$user" "$@"
    --volume "$WORK_DIR/smoke:/smoke:ro"
    --env HOME=/home/app
    --env STORAGE_EMULATOR_HOST="$GCS_ENDPOINT"
    --env GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false
    --env NO_GCE_CHECK=True
    --env LOG_FORMAT=json
    --env TF_CPP_MIN_LOG_LEVEL=2
    --env TF_NUM_INTEROP_THREADS=2
    --env TF_NUM_INTRAOP_THREADS=2
    "${CTR_OF[$target]}" --)
}

entrypoint_of() { # target -> the image's ENTRYPOINT (or CMD) as words, one per line
  local image="localhost/cloud-ml-jobs-$1:test"
  "$PYTHON" -c 'import json, sys
ep = json.loads(sys.argv[1]) or json.loads(sys.argv[2]) or []
print("\n".join(ep))' "$(image_config "$image" Entrypoint)" "$(image_config "$image" Cmd)"
}

host_py() { # run Python on the host against the embedded GCS
  STORAGE_EMULATOR_HOST="$GCS_ENDPOINT" GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false "$PYTHON" "$@"
}

start_gcs() {
  local port
  port=$("$PYTHON" -c 'from jobcommon.localgcs import free_port; print(free_port())')
  GCS_ENDPOINT="http://localhost:$port"
  "$PYTHON" -m jobcommon.localgcs --data-dir "$WORK_DIR/gcs" --bucket smoke --port "$port" \
    >"$WORK_DIR/logs/localgcs.log" 2>&1 &
  GCS_PID=$!

  for _ in $(seq 1 100); do
    grep -q STORAGE_EMULATOR_HOST "$WORK_DIR/logs/localgcs.log" 2>/dev/null && return 0
    kill -0 "$GCS_PID" 2>/dev/null || die "local GCS did not start: $WORK_DIR/logs/localgcs.log"
    sleep 0.2
  done
  die "local GCS did not answer in 20 s"
}

# ---------------------------------------------------------------------------------------------
# Smoke runs
# ---------------------------------------------------------------------------------------------
smoke_storage() { # every image: the storage layer reaches the embedded GCS from the chroot
  local target=$1
  in_image "$target" python -m jobcommon.gsutil cp /smoke/hello.txt "gs://smoke/$target/hello.txt"
  in_image "$target" python -m jobcommon.gsutil cat "gs://smoke/$target/hello.txt" | grep hello
}

help_trainer() {
  mapfile -t ep < <(entrypoint_of trainer)
  in_image trainer "${ep[@]}" --help
  in_image trainer python -m trainer.convert --help
}

help_batch() {
  mapfile -t ep < <(entrypoint_of batch)
  in_image batch "${ep[@]}" --help # the Dataflow worker entry point (Beam boot)
  in_image batch python -m batch.predict --help # the launcher
}

help_executor() {
  in_image executor python -m executor --help
  in_image executor python -m executor run --help
  in_image executor python -m executor vm-run --help
  # The kernel papermill asks for by default must be registered in the image.
  in_image executor jupyter kernelspec list | grep python3
}

prepare_smoke_data() {
  echo hello >"$WORK_DIR/smoke/hello.txt"
  "$PYTHON" - "$WORK_DIR/smoke" <<'EOF'
import json, sys
import numpy as np
import nbformat
from sklearn.datasets import load_digits

out = sys.argv[1]
x, y = load_digits(return_X_y=True)
x = (x / 16.0).astype("float32")
y = y.astype("int64")
np.savez(f"{out}/digits.npz", x=x[:320], y=y[:320])
nb = nbformat.v4.new_notebook()
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
params = nbformat.v4.new_code_cell("n = 2")
params.metadata["tags"] = ["parameters"]
nb.cells = [
    params,
    nbformat.v4.new_code_cell("import numpy as np\nanswer = int(np.arange(n).sum()) + 39"),
    nbformat.v4.new_code_cell("print('answer', answer)"),
]
nbformat.write(nb, f"{out}/smoke.ipynb")
EOF
  chmod -R a+rX "$WORK_DIR/smoke"
}

smoke_trainer() {
  # Tiny digits data -> TFRecord shards + schema.json in GCS (the image's own converter), then
  # one epoch of training from GCS to a model export in GCS, checked on the host.
  in_image trainer python -m trainer.convert --input /smoke/digits.npz \
    --output-dir gs://smoke/data --feature-name pixels --num-shards 2 --eval-fraction 0.2
  mapfile -t ep < <(entrypoint_of trainer)
  in_image trainer "${ep[@]}" \
    --train-files 'gs://smoke/data/train-*' --eval-files 'gs://smoke/data/eval-*' \
    --job-dir gs://smoke/job --epochs 1 --batch-size 32 --hidden-units 16
  host_py - <<'EOF'
from jobcommon import exports, storage
export = exports.latest_export("gs://smoke/job/keras_export")
print("export:", export)
assert exports.is_complete_export(export), export
for name in ("saved_model.pb", "model.keras", "schema.json"):
    assert storage.exists(storage.join(export, name)), f"{name} missing from {export}"
EOF
}

smoke_batch() {
  # Instances named after the trained model's schema, scored by the image's launcher with the
  # local runner; results and error stats read back on the host.
  host_py - "$WORK_DIR/smoke" <<'EOF'
import json, sys
import numpy as np
from jobcommon import exports, storage
from jobcommon.schema import Schema

export = exports.latest_export("gs://smoke/job/keras_export")
schema = Schema.from_json(storage.read_text(storage.join(export, "schema.json")))
data = np.load(f"{sys.argv[1]}/digits.npz")
lines = []
for row in data["x"][-8:]:
    inst = {}
    for f in schema.features:
        inst[f.name] = row.reshape(f.shape).tolist() if f.shape else float(row[0])
    lines.append(json.dumps(inst))
storage.write_text("gs://smoke/batch/instances.jsonl", "\n".join(lines) + "\n")
EOF
  in_image batch python -m batch.predict \
    --model-dir gs://smoke/job/keras_export \
    --input-paths gs://smoke/batch/instances.jsonl --data-format JSON \
    --output-path gs://smoke/batch/out --runner DirectRunner
  host_py - <<'EOF'
import json
from jobcommon import storage
results = storage.glob("gs://smoke/batch/out/prediction.results-*")
rows = [json.loads(l) for p in results for l in storage.read_text(p).splitlines() if l.strip()]
print(len(rows), "results; first:", rows[0])
assert len(rows) == 8, rows
assert all("prediction" in r for r in rows)
EOF
}

results_rows() { # output prefix -> its prediction rows, one canonical JSON line each, sorted
  host_py - "$1" <<'EOF'
import json, sys
from jobcommon import storage
paths = storage.glob(sys.argv[1] + "/prediction.results-*")
rows = [json.loads(l) for p in paths for l in storage.read_text(p).splitlines() if l.strip()]
print("\n".join(sorted(json.dumps(r, sort_keys=True) for r in rows)))
EOF
}

stop_worker_pool() {
  [[ -n "$POOL_PID" ]] || return 0
  # setsid made the buildah run a process group of its own: the pool's SDK workers go too.
  kill -- "-$POOL_PID" 2>/dev/null || true
  wait "$POOL_PID" 2>/dev/null || true
  POOL_PID=""
}

smoke_batch_worker_pool() {
  # The Dataflow worker contract, as far as it runs without Dataflow: the image's own Python
  # SDK harness serves Beam's external worker pool (the mode Beam's boot program also
  # offers), and the launcher on the host runs the job with the portable runner, which hands
  # the pipeline's pickled DoFns to SDK workers started by that pool. The image must run them
  # with its own packages, and the rows must equal the local runner's.
  local port pool_log="$WORK_DIR/logs/worker-pool.log"
  port=$("$PYTHON" -c 'from jobcommon.localgcs import free_port; print(free_port())')
  trap stop_worker_pool EXIT # this step runs in a subshell: never leave the pool behind
  image_run_cmd batch --network host
  setsid "${RUN_CMD[@]}" python -m apache_beam.runners.worker.worker_pool_main \
    --service_port "$port" >"$pool_log" 2>&1 &
  POOL_PID=$!
  # The pool logs its start at INFO with no handler set up, so nothing shows: wait for its
  # port instead.
  local _ up=0
  for _ in $(seq 1 600); do
    kill -0 "$POOL_PID" 2>/dev/null || break
    if "$PYTHON" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1)' \
      "$port" 2>/dev/null; then
      up=1
      break
    fi
    sleep 0.2
  done
  if [[ $up != 1 ]]; then
    cat "$pool_log"
    echo "the batch image's worker pool did not start"
    return 1
  fi
  echo "worker pool of the batch image on localhost:$port"

  local job=(--model-dir gs://smoke/job/keras_export --input-paths gs://smoke/batch/instances.jsonl
    --data-format JSON)
  host_py -m batch.predict "${job[@]}" --output-path gs://smoke/batch/out-pool \
    --runner PortableRunner --job_endpoint embed \
    --environment_type EXTERNAL --environment_config "localhost:$port"
  host_py -m batch.predict "${job[@]}" --output-path gs://smoke/batch/out-local \
    --runner DirectRunner
  stop_worker_pool
  echo "--- worker pool log:"
  cat "$pool_log"
  # The job's DoFns ran in SDK workers the pool started inside the image.
  grep -q "Starting worker with command" "$pool_log"

  local pool_rows local_rows image_rows
  pool_rows=$(results_rows gs://smoke/batch/out-pool)
  local_rows=$(results_rows gs://smoke/batch/out-local)
  image_rows=$(results_rows gs://smoke/batch/out)
  echo "$(wc -l <<<"$pool_rows") rows from the worker pool; first: $(head -n 1 <<<"$pool_rows")"
  [[ $(wc -l <<<"$pool_rows") -eq 8 ]]
  if [[ "$pool_rows" != "$local_rows" ]]; then
    echo "the worker pool's rows differ from the local runner's:"
    diff <(echo "$local_rows") <(echo "$pool_rows") || true
    return 1
  fi
  # ... and equal what the image's own local run scored (smoke-batch).
  [[ "$pool_rows" == "$image_rows" ]]
}

smoke_executor() {
  in_image executor python -m jobcommon.gsutil cp /smoke/smoke.ipynb gs://smoke/nb/in.ipynb
  in_image executor python -m executor run gs://smoke/nb/in.ipynb gs://smoke/nb/out.ipynb \
    -p n 4
  host_py - <<'EOF'
import json
from jobcommon import storage
nb = json.loads(storage.read_text("gs://smoke/nb/out.ipynb"))
text = "".join(
    "".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
    for o in c.get("outputs", [])
)
print("outputs:", text.strip())
assert "answer 45" in text, text  # 0+1+2+3 + 39 with the injected n = 4
EOF
}

image_report() { # sizes, layers and largest packages -> $WORK_DIR/image-report.md (and bench/)
  local t specs=() mnt
  "${BUILDAH[@]}" inspect --type image "$BASE_TAG" >"$WORK_DIR/inspect-base.json"
  for t in $TARGETS; do
    [[ -n "${CTR_OF[$t]:-}" ]] || continue
    "${BUILDAH[@]}" inspect --type image "localhost/cloud-ml-jobs-$t:test" \
      >"$WORK_DIR/inspect-$t.json"
    mnt=$("${BUILDAH[@]}" mount "${CTR_OF[$t]}")
    specs+=("$t=$WORK_DIR/inspect-$t.json=$mnt")
  done
  if ((${#specs[@]} == 0)); then
    echo "(no image was built: no sizes to report)" >"$WORK_DIR/image-report.md"
    return 0
  fi
  local bench=()
  # Sizes go to bench/results only from a run whose every step passed.
  [[ $FAILURES -eq 0 && "$SKIP_BUILD" != 1 ]] && bench=(--bench)
  "$PYTHON" "$REPO/docker/image_report.py" --base "$WORK_DIR/inspect-base.json" \
    --markdown "$WORK_DIR/image-report.md" "${bench[@]}" "${specs[@]}"
  for t in $TARGETS; do
    [[ -z "${CTR_OF[$t]:-}" ]] || "${BUILDAH[@]}" umount "${CTR_OF[$t]}" >/dev/null
  done
}

# ---------------------------------------------------------------------------------------------
main() {
  ensure_tools
  log "work dir: $WORK_DIR"
  if [[ "$SKIP_BUILD" != 1 ]]; then
    step base-images build_base_image
    [[ $FAILURES -eq 0 ]] || die "could not build the base images"
    local t
    for t in $TARGETS; do
      step "build-$t" build_target "$t"
    done
  fi
  prepare_smoke_data
  start_gcs
  log "embedded GCS at $GCS_ENDPOINT"
  for t in $TARGETS; do
    "${BUILDAH[@]}" inspect --type image "localhost/cloud-ml-jobs-$t:test" >/dev/null 2>&1 \
      || continue
    local started
    started=$(date +%s)
    new_container "$t" # a full copy of the image with vfs: the slowest part of the checks
    SUMMARY+=("| container-$t | created | $(($(date +%s) - started)) s |")
    step "inspect-$t" inspect_image "$t"
    step "storage-$t" smoke_storage "$t"
    step "help-$t" "help_$t"
  done
  # Order matters: batch scores the model the trainer exported.
  for t in trainer batch executor; do
    [[ " $TARGETS " == *" $t "* ]] || continue
    "${BUILDAH[@]}" inspect --type image "localhost/cloud-ml-jobs-$t:test" >/dev/null 2>&1 \
      || continue
    step "smoke-$t" "smoke_$t"
    if [[ $t == batch ]]; then
      step smoke-batch-worker-pool smoke_batch_worker_pool
    fi
  done

  step image-report image_report
  local total=$(($(date +%s) - T0))
  {
    echo "# Image test: last result"
    echo
    echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores by \`bash docker/test-images.sh\`"
    echo "(buildah $(buildah --version | awk '{print $3}'), vfs storage, chroot isolation;"
    echo "base: Debian bookworm rootfs standing in for the CUDA image)."
    echo
    cat "$WORK_DIR/image-report.md" 2>/dev/null || echo "(no image report: see the steps)"
    echo
    echo "| step | result | time |"
    echo "|---|---|---|"
    printf '%s\n' "${SUMMARY[@]}"
    echo
    echo "Total: ${total} s, ${FAILURES} failed step(s)."
    if [[ "$SKIP_BUILD" == 1 ]]; then
      echo "Images reused from an earlier build (SKIP_BUILD=1)."
    elif [[ ! -f "$WORK_DIR/base-image-state" ]]; then
      echo "The base images were reused from an earlier run (a first run adds about 100 s:"
      echo "debootstrap about 60 s, import about 15 s)."
    fi
    echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
  } >"$RESULTS_MD"
  cat "$RESULTS_MD"
  log "logs in $WORK_DIR/logs"
  if [[ "$KEEP_IMAGES" == 0 ]]; then
    for c in "${CONTAINERS[@]}"; do "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1 || true; done
    for t in $TARGETS; do "${BUILDAH[@]}" rmi "localhost/cloud-ml-jobs-$t:test" || true; done
  fi
  # Each build leaves its intermediate stages behind as untagged images (GBs with vfs).
  "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
  [[ $FAILURES -eq 0 ]]
}

main "$@"
