#!/usr/bin/env bash
# Rebalancing benchmarks behind docs/results.md: the placement an engine runs, solved on one
# window of routing, re-solved from there on a drifted window with a budget of slots that may
# move (`exflow solve --previous --moves-curve`, DeepEP normal mode, 2 x 4 GPUs, no load limit).
# Prints Markdown tables.
#
#   Mild drift:   window 1 = the first half of the ESFT intent trace; window 2 = its second half
#                 with half as many ESFT law tokens mixed in (shuffled, fixed seed).
#   Strong drift: window 1 = ESFT intent; window 2 = ESFT law (another task).
#   DeepSeek-V3 shape: exflow.rebalance_experts on synthetic windows (bench/rebalance_v3.py):
#                 seconds per call from loads, co-activation counts, top-k ids, and with a
#                 previous placement and a budget.
#
#   BUILD_DIR   build directory (default: build/)
#   SHARED      directory with the ESFT traces (default: ../shared/data; skipped if absent)
#   PYTHON      an interpreter with numpy (default: /usr/bin/python3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
shared=${SHARED:-$root/../shared/data}
python=${PYTHON:-/usr/bin/python3}
bench_build exflow_cli synthetic_trace exflow_python
exflow=$build/bin/exflow

machine
echo
echo "DeepSeek-V3 shape (58 x 256, top-8, 8 x 8 GPUs, 320 slots), exflow.rebalance_experts"
echo
"$build/bin/synthetic_trace" "$work/v3-before.npy" --tokens 20000 --layers 58 --experts 256 \
  --k 8 --seed 7 >/dev/null
"$build/bin/synthetic_trace" "$work/v3-after.npy" --tokens 20000 --layers 58 --experts 256 \
  --k 8 --seed 8 >/dev/null
"$python" "$root/bench/rebalance_v3.py" "$build/python" "$work/v3-before.npy" "$work/v3-after.npy"
echo

if [[ ! -f "$shared/esft-intent-top6.npy" ]]; then
  echo "no ESFT traces under $shared: nothing more to measure"
  exit 0
fi

"$python" - "$shared" "$work" <<'PY'
import sys
import numpy as np
shared, work = sys.argv[1:]
intent = np.load(f"{shared}/esft-intent-top6.npy")
law = np.load(f"{shared}/esft-law-top6.npy")
half = len(intent) // 2
mixed = np.concatenate([intent[half:2 * half], law[:half // 2]])
mixed = mixed[np.random.default_rng(0).permutation(len(mixed))]
np.save(f"{work}/mild-before.npy", intent[:half])
np.save(f"{work}/mild-after.npy", mixed)
PY

# curve LABEL BEFORE AFTER: the cost against the slots allowed to move.
curve() {
  local label=$1 before=$2 after=$3
  "$exflow" solve "$before" --gpus-per-node 4 --nodes 2 --scheme deepep --max-load-ratio none \
    --out-dir "$work/old" --json --quiet >"$work/old.json"
  local previous
  previous=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['placement'])" \
    "$work/old.json")
  /usr/bin/time -f "%e" -o "$work/curve.s" "$exflow" solve "$after" --gpus-per-node 4 --nodes 2 \
    --scheme deepep --max-load-ratio none --previous "$previous" --moves-curve \
    --out-dir "$work/new" --json --quiet >"$work/curve.json"
  /usr/bin/time -f "%e" -o "$work/budget.s" "$exflow" solve "$after" --gpus-per-node 4 \
    --nodes 2 --scheme deepep --max-load-ratio none --previous "$previous" --max-moves 166 \
    --out-dir "$work/new" --json --quiet >"$work/budget.json"
  python3 - "$label" "$work/curve.json" "$work/curve.s" "$work/budget.json" "$work/budget.s" <<'PY'
import json, sys
label, curve_path, curve_s, budget_path, budget_s = sys.argv[1:]
j = json.load(open(curve_path))
points = j["moves_curve"]
start, best = points[0]["cost"], points[-1]["cost"]
for p in points:
    recovered = 100 * (start - p["cost"]) / (start - best) if start > best else 100.0
    print(f"| {label} | {p['percent']:g}% | {p['max_moves']} | {p['moved']} | {p['cost']:.3f} | "
          f"{recovered:.1f}% |")
b = json.load(open(budget_path))
print(f"| {label}, `--max-moves 166` alone | 10% | 166 | {b['moved_slots']} | "
      f"{b['schemes']['deepep']['placement']['cost']:.3f} (whole trace) | "
      f"{float(open(budget_s).read()):.1f} s for this solve, "
      f"{float(open(curve_s).read()):.1f} s for the curve |")
PY
}

echo "| drift | slots allowed to move | of 1 664 | moved | deepep cost per token | saving recovered |"
echo "|---|---:|---:|---:|---:|---:|"
curve "mild" "$work/mild-before.npy" "$work/mild-after.npy"
curve "strong" "$shared/esft-intent-top6.npy" "$shared/esft-law-top6.npy"
