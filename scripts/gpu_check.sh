#!/usr/bin/env bash
# One-shot accelerator check, for a person with one GPU (at most ~8 minutes there):
#
#   pip install -U "jax[cuda12]" && pip install -e ".[test,bench]"
#   bash scripts/gpu_check.sh OUTDIR
#
# 1. the accelerator-path tests (pytest -m accelerator: vmap+masked children end to end, vmapped
#    GanNas seeds, shard_map / pmap data parallelism and population parallelism on 4 forced CPU
#    devices);
# 2. configs/cifar10.py's children trained for 300 steps on synthetic CIFAR-10-shaped data
#    (scripts/train_check.py);
# 3. the GAN and child benches against PyTorch on CUDA (scripts/bench_torch.py --device cuda;
#    the GAN bench includes torch.compile and, on CUDA, CUDA graphs).
#
# Every step's output goes to OUTDIR as JSON (and a .log), and OUTDIR/summary.json says what ran,
# how long it took, and what was skipped and why. On a machine without a CUDA GPU the GPU rows
# are skipped (saying so); the tests still run, the training check runs a few CPU steps, and the
# benches run a short CPU pass so that every part of the script is exercised.
set -uo pipefail

OUT="${1:?usage: bash scripts/gpu_check.sh OUTDIR}"
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python}"
: >"$OUT/steps.jsonl"

BACKEND="$("$PY" -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo none)"
if [ "$BACKEND" = none ]; then
  echo "gpu_check: JAX does not import with $PY; install the project first (pip install -e .)" >&2
  exit 2
fi
if "$PY" -c 'import torch' 2>/dev/null; then
  CUDA="$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')"
  TORCH=1
else
  CUDA=0
  TORCH=0
fi
echo "gpu_check: JAX backend $BACKEND; torch $([ "$TORCH" = 1 ] && echo "CUDA=$CUDA" || echo missing)"

# step NAME CMD...: runs CMD with its output in OUTDIR/NAME.log and records rc and seconds.
step() {
  local name="$1"
  shift
  echo "gpu_check: $name: $*"
  local t0
  t0="$(date +%s)"
  "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local secs=$(($(date +%s) - t0))
  printf '{"step": "%s", "rc": %d, "seconds": %d, "command": "%s"}\n' \
    "$name" "$rc" "$secs" "$*" >>"$OUT/steps.jsonl"
  echo "gpu_check: $name: exit $rc in ${secs} s (log: $OUT/$name.log)"
}

# skip NAME REASON: records a skipped step.
skip() {
  printf '{"step": "%s", "skipped": "%s"}\n' "$1" "$2" >>"$OUT/steps.jsonl"
  echo "gpu_check: $1: skipped: $2"
}

step accelerator_tests "$PY" -m pytest -m accelerator -q -p no:cacheprovider \
  --junitxml="$OUT/accelerator_tests.xml"

if [ "$BACKEND" = cpu ]; then
  skip train_gpu "no accelerator (JAX backend cpu); a short CPU run instead"
  step train_cpu_quick "$PY" scripts/train_check.py --steps 10 --population 2 --batch-size 16 \
    --train-size 512 --eval-size 128 --out "$OUT/train_cpu_quick.json"
else
  step train_gpu "$PY" scripts/train_check.py --steps 300 --population 8 \
    --out "$OUT/train_gpu.json"
fi

if [ "$TORCH" = 0 ]; then
  skip bench_gan "torch is not installed (pip install -e '.[bench]')"
  skip bench_child "torch is not installed (pip install -e '.[bench]')"
elif [ "$CUDA" = 1 ]; then
  step bench_gan_cuda "$PY" scripts/bench_torch.py gan --device cuda --repeats 5 \
    --out "$OUT/bench_gan_cuda.json"
  step bench_child_cuda "$PY" scripts/bench_torch.py child --device cuda --repeats 2 \
    --out "$OUT/bench_child_cuda.json"
else
  skip bench_gan_cuda "no CUDA GPU (torch.cuda.is_available() is False); a short CPU pass instead"
  skip bench_child_cuda "no CUDA GPU (torch.cuda.is_available() is False); a short CPU pass instead"
  step bench_gan_cpu_quick "$PY" scripts/bench_torch.py gan --spaces nb201 --steps 200 \
    --repeats 1 --out "$OUT/bench_gan_cpu_quick.json"
  step bench_child_cpu_quick "$PY" scripts/bench_torch.py child --population 4 --steps 50 \
    --repeats 1 --out "$OUT/bench_child_cpu_quick.json"
fi

"$PY" - "$OUT" "$BACKEND" <<'EOF'
import json, pathlib, platform, sys

out, backend = pathlib.Path(sys.argv[1]), sys.argv[2]
steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
results = {}
for s in steps:
    f = out / f"{s['step']}.json"
    if f.exists():
        results[s["step"]] = json.loads(f.read_text())
summary = {
    "backend": backend,
    "platform": platform.platform(),
    "steps": steps,
    "failed": [s["step"] for s in steps if s.get("rc", 0) != 0],
    "skipped": {s["step"]: s["skipped"] for s in steps if "skipped" in s},
    "results": results,
}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(f"gpu_check: wrote {out / 'summary.json'}; failed: {summary['failed'] or 'none'}")
sys.exit(1 if summary["failed"] else 0)
EOF
