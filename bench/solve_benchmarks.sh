#!/usr/bin/env bash
# Solver benchmarks behind docs/results.md: for each instance, the whole `exflow solve` process
# (wall time and peak RSS from /usr/bin/time) and its JSON (cost, vanilla cost, lower bound,
# gap, optimality). Prints one Markdown table. Runs with --max-load-ratio none: the original
# tool's objective, which the bounds and proofs are about.
#
#   BUILD_DIR   build directory (default: build/)
#   SHARED      directory with the ESFT traces (default: ../shared/data; rows skipped if absent)
#   QUICK=1     skip the DeepSeek-scale rows
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
shared=${SHARED:-$root/../shared/data}
bench_build exflow_cli synthetic_trace
exflow=$build/bin/exflow

"$build/bin/synthetic_trace" "$work/mixtral.npy" --tokens 50000 --layers 32 --experts 8 --seed 1 \
  --planted "$work/mixtral-planted.csv" --gpus 8
"$build/bin/synthetic_trace" "$work/mixtral-500k.npy" --tokens 500000 --layers 32 --experts 8 --seed 1
if [[ -z "${QUICK:-}" ]]; then
  "$build/bin/synthetic_trace" "$work/deepseek.npy" --tokens 50000 --layers 58 --experts 256 --seed 1 \
    --planted "$work/deepseek-planted.csv" --gpus 64
fi

machine
echo
echo "| instance | GPUs | method | cost | vanilla | lower bound | gap | optimal | solve s | process s | peak RSS MiB |"
echo "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|"

# run LABEL TRACE P N [extra solve args...]
run() {
  local label=$1 trace=$2 p=$3 n=$4
  shift 4
  /usr/bin/time -f "%e %M" -o "$work/time" "$exflow" solve "$trace" --gpus-per-node "$p" \
    --nodes "$n" --out-dir "$work/solutions" --json --quiet --max-load-ratio none "$@" \
    >"$work/out.json"
  read -r wall rss <"$work/time"
  python3 - "$label" "$n x $p" "$wall" "$rss" "$work/out.json" <<'PY'
import json, sys
label, gpus, wall, rss, path = sys.argv[1:]
j = json.load(open(path))
def f(x, d=4):
    return "n/a" if x is None else f"{x:.{d}f}"
gap = "n/a" if j["gap"] is None else f"{100 * j['gap']:.2f}%"
print(f"| {label} | {gpus} | {j['method']}{' (bipart)' if j['bipart'] else ''} | {f(j['cost'])} | "
      f"{f(j['vanilla']['cost'])} | {f(j['lower_bound'])} | {gap} | "
      f"{'yes' if j['optimal'] else 'no'} | {j['solve_seconds']:.3f} | {float(wall):.2f} | "
      f"{int(rss) / 1024:.1f} |")
PY
}

# planted LABEL TRACE CSV P N: the generator's own chain placement, scored by exflow eval.
planted() {
  "$exflow" eval "$2" "$3" --gpus-per-node "$4" --nodes "$5" --json --quiet >"$work/eval.json"
  python3 - "$1" "$5 x $4" "$work/eval.json" <<'PY'
import json, sys
label, gpus, path = sys.argv[1:]
j = json.load(open(path))
print(f"| {label} | {gpus} | planted (generator's chains) | {j['cost']:.4f} | {j['vanilla']['cost']:.4f} | | | | | | |")
PY
}

planted "Mixtral 8x7B shape, 50k tokens" "$work/mixtral.npy" "$work/mixtral-planted.csv" 8 1
for cfg in "2 1" "4 1" "8 1" "2 2" "4 2"; do
  set -- $cfg
  run "Mixtral 8x7B shape, 50k tokens" "$work/mixtral.npy" "$1" "$2"
done
run "Mixtral 8x7B shape, 500k tokens" "$work/mixtral-500k.npy" 4 2
for cfg in "4 1" "8 1"; do
  set -- $cfg
  run "Mixtral 8x7B shape, 50k tokens" "$work/mixtral.npy" "$1" "$2" --method ilp --time-limit 60
done

if [[ -z "${QUICK:-}" ]]; then
  planted "DeepSeek-V3 shape, 50k tokens" "$work/deepseek.npy" "$work/deepseek-planted.csv" 8 8
  run "DeepSeek-V3 shape, 50k tokens" "$work/deepseek.npy" 8 8 --method fast
  run "DeepSeek-V3 shape, 50k tokens" "$work/deepseek.npy" 8 8 --method bcd
  run "DeepSeek-V3 shape, 50k tokens" "$work/deepseek.npy" 8 8 --method vanilla
fi

if [[ -f "$shared/esft-intent-top6.npy" ]]; then
  for task in intent law; do
    for cfg in "4 1" "8 1" "8 2"; do
      set -- $cfg
      run "ESFT $task, column 0 (top-1)" "$shared/esft-$task-top6.npy" "$1" "$2" --topk 1
    done
    run "ESFT $task, column 0 (top-1)" "$shared/esft-$task-top6.npy" 8 1 --topk 1 --method bcd
    run "ESFT $task, column 0 (top-1)" "$shared/esft-$task-top6.npy" 8 1 --topk 1 --bipart
  done
fi
