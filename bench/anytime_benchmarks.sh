#!/usr/bin/env bash
# Time-to-quality benchmarks behind docs/results.md ("Anytime"): each instance solved by
# `exflow solve` with a time limit of 1, 2, 5, 10 and 30 s and with the default budget, one
# process per run, its cost (the evaluator's context-coherent cost per token), the saving
# against vanilla, the whole process's wall time and how the search stopped. Top-1 rows run
# with --max-load-ratio none, so the graph solver is the whole search and --time-limit is its
# limit; top-k rows give the graph solver a quarter of the limit (--time-limit) and the token
# search the rest (--token-time-limit).
#
#   BUILD_DIR   build directory (default: build/)
#   SHARED      directory with the ESFT traces (default: ../shared/data; rows skipped if absent)
#   LIMITS      the time limits in seconds (default "1 2 5 10 30")
#   QUICK=1     only the DeepSeek-V3-shaped rows the issue's targets name
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
shared=${SHARED:-$root/../shared/data}
limits=${LIMITS:-1 2 5 10 30}
bench_build exflow_cli synthetic_trace
exflow=$build/bin/exflow

# Strong affinity: a token follows its expert's successor with probability 0.6; weak: 0.05.
"$build/bin/synthetic_trace" "$work/v3-weak.npy" --tokens 50000 --layers 58 --experts 256 \
  --follow 0.05 --seed 1
"$build/bin/synthetic_trace" "$work/v3-top8.npy" --tokens 20000 --layers 58 --experts 256 --k 8 \
  --seed 1
if [[ -z "${QUICK:-}" ]]; then
  "$build/bin/synthetic_trace" "$work/v3-strong.npy" --tokens 50000 --layers 58 --experts 256 \
    --seed 1
fi

machine
echo
echo "| instance | GPUs | time limit s | cost | vanilla | saving | process s | stopped by |"
echo "|---|---|---:|---:|---:|---:|---:|---|"

# run LABEL TRACE P N K LIMIT [extra solve args...]; LIMIT "default" runs without a limit.
run() {
  local label=$1 trace=$2 p=$3 n=$4 k=$5 limit=$6
  shift 6
  local args=()
  if [[ $limit != default ]]; then
    if ((k == 1)); then
      args=(--time-limit "$limit")
    else
      args=(--time-limit "$(awk -v t="$limit" 'BEGIN { print t / 4 }')"
        --token-time-limit "$(awk -v t="$limit" 'BEGIN { print t * 3 / 4 }')")
    fi
  fi
  if ((k == 1)); then args+=(--max-load-ratio none); fi
  /usr/bin/time -f "%e" -o "$work/time" "$exflow" solve "$trace" --gpus-per-node "$p" \
    --nodes "$n" --out-dir "$work/solutions" --json --quiet "${args[@]}" "$@" >"$work/out.json"
  python3 - "$label" "$n x $p" "$limit" "$(cat "$work/time")" "$work/out.json" <<'PY'
import json, sys
label, gpus, limit, wall, path = sys.argv[1:]
j = json.load(open(path))
cost, vanilla = j["cost"], j["vanilla"]["cost"]
print(f"| {label} | {gpus} | {limit} | {cost:.4f} | {vanilla:.4f} | "
      f"{100 * (1 - cost / vanilla):.2f}% | {float(wall):.2f} | {j['status']} |")
PY
}

# series LABEL TRACE P N K [extra solve args...]: every limit, then the default budget.
series() {
  local label=$1 trace=$2 p=$3 n=$4 k=$5
  shift 5
  for limit in $limits default; do
    run "$label" "$trace" "$p" "$n" "$k" "$limit" "$@"
  done
}

series "DeepSeek-V3 shape, top-1, weak affinity, 50k tokens" "$work/v3-weak.npy" 8 8 1
# The 8 starts of small graphs, which were the default here before large graphs took 2.
run "DeepSeek-V3 shape, top-1, weak affinity, 50k tokens, --starts 8" "$work/v3-weak.npy" 8 8 1 \
  default --starts 8
series "DeepSeek-V3 shape, top-8, 20k tokens" "$work/v3-top8.npy" 8 8 8
if [[ -z "${QUICK:-}" ]]; then
  series "DeepSeek-V3 shape, top-1, strong affinity, 50k tokens" "$work/v3-strong.npy" 8 8 1
  for name in intent law; do
    trace=$shared/esft-$name-top6.npy
    [[ -f $trace ]] || continue
    series "ESFT $name, top-1 (column 0)" "$trace" 8 1 1 --topk 1
    series "ESFT $name, top-6, no load limit" "$trace" 8 1 6 --max-load-ratio none
  done
fi
