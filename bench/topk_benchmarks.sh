#!/usr/bin/env bash
# Top-k, load and redundant-expert benchmarks behind docs/results.md: the whole `exflow solve`
# process on the ESFT top-6 traces (8 GPUs, one node) under each load limit and with replicas,
# a Pareto table of load-ratio limit against cost, and the DeepSeek-V3-shaped top-8 instance
# (256 experts, 58 layers, 8 x 8 GPUs, 20 000 tokens). Prints Markdown tables.
#
#   BUILD_DIR   build directory (default: build/)
#   SHARED      directory with the ESFT traces (default: ../shared/data; rows skipped if absent)
#   QUICK=1     skip the Pareto table and the DeepSeek-scale row
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
shared=${SHARED:-$root/../shared/data}
bench_build exflow_cli synthetic_trace
exflow=$build/bin/exflow

machine
echo

# run LABEL TRACE P N [extra solve args...]: one table row from the solve's JSON.
run() {
  local label=$1 trace=$2 p=$3 n=$4
  shift 4
  /usr/bin/time -f "%e %M" -o "$work/time" "$exflow" solve "$trace" --gpus-per-node "$p" \
    --nodes "$n" --out-dir "$work/solutions" --json --quiet "$@" >"$work/out.json"
  read -r wall rss <"$work/time"
  python3 - "$label" "$wall" "$rss" "$work/out.json" <<'PY'
import json, sys
label, wall, rss, path = sys.argv[1:]
j = json.load(open(path))
v = j["vanilla"]
cross = j["intra"] + j["inter"]
vcross = v["intra"] + v["inter"]
print(f"| {label} | {j['max_load_ratio']} | {j['cost']:.3f} | {v['cost']:.3f} | "
      f"{100 * (v['cost'] - j['cost']) / v['cost']:.1f}% | {cross:.3f} | {j['inter']:.3f} | "
      f"{j['load_ratio_max']:.3f} | {v['load_ratio_max']:.3f} | {j['load_ratio_mean']:.3f} | "
      f"{j['replicas']} | {100 * j['replica_share']:.1f}% | {v['baseline']['cost']:.3f} | "
      f"{j['baseline']['cost']:.3f} | {float(wall):.1f} | {int(rss) / 1024:.0f} |")
PY
}

header() {
  echo "| instance | load limit | cost | vanilla | saving | cross-GPU/token | cross-node/token | load ratio worst | vanilla worst | load ratio mean | replicas | served by replicas | baseline vanilla | baseline this placement | process s | peak RSS MiB |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
}

if [[ -f "$shared/esft-intent-top6.npy" ]]; then
  header
  for task in intent law; do
    t=$shared/esft-$task-top6.npy
    run "ESFT $task, 1x8" "$t" 8 1 --max-load-ratio none
    run "ESFT $task, 1x8" "$t" 8 1 --max-load-ratio auto
    run "ESFT $task, 1x8, --redundant 1" "$t" 8 1 --max-load-ratio none --redundant 1
    run "ESFT $task, 1x8, --redundant 1" "$t" 8 1 --max-load-ratio auto --redundant 1
    run "ESFT $task, 2x8" "$t" 8 2 --max-load-ratio none
  done
  echo
  if [[ -z "${QUICK:-}" ]]; then
    echo "Pareto: ESFT intent, 1 x 8 GPUs"
    echo
    header
    for r in 1.2 1.3 1.4 1.5 1.75 2.0 2.5 auto none; do
      run "ESFT intent, 1x8" "$shared/esft-intent-top6.npy" 8 1 --max-load-ratio "$r"
    done
    echo
  fi
fi

if [[ -z "${QUICK:-}" ]]; then
  "$build/bin/synthetic_trace" "$work/deepseek-top8.npy" --tokens 20000 --layers 58 --experts 256 \
    --k 8 --seed 1
  header
  run "DeepSeek-V3 shape, top-8, 20k tokens, 8x8" "$work/deepseek-top8.npy" 8 8 --max-load-ratio none
  run "DeepSeek-V3 shape, top-8, 20k tokens, 8x8" "$work/deepseek-top8.npy" 8 8 --max-load-ratio auto
fi
