#!/usr/bin/env bash
# Scheme benchmarks behind docs/results.md: exflow's placement for DeepEP (normal and
# low-latency mode) head to head with DeepSeek's EPLB, every placement scored by the one
# evaluator. Prints Markdown tables.
#
#   1. EPLB (`--method eplb`) on each bundled ESFT top-6 trace and topology; its worst-layer
#      load ratio on the trace is then the load limit exflow's `--scheme deepep` solve gets, so
#      the two are compared at equal load.
#   2. The trade-off: exflow `--scheme deepep` at load limits 1.05, 1.1, 1.3 and none.
#   3. One redundant slot per GPU: EPLB's replicas against exflow `--scheme deepep-ll` (and
#      deepep) with the same slots, at EPLB's load ratio.
#   4. DeepSeek-V3 shape (58 layers, 256 experts, top-8, 8 x 8 GPUs, 20 000 tokens): the whole
#      `solve --scheme deepep` process.
#
#   BUILD_DIR   build directory (default: build/)
#   SHARED      directory with the ESFT traces (default: ../shared/data; rows skipped if absent)
#   QUICK=1     skip the trade-off table and the DeepSeek-scale row
#   TABLES      which tables (default: eplb,replicas,tradeoff,scale)
set -euo pipefail
tables=${TABLES:-eplb,replicas,tradeoff,scale}
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
shared=${SHARED:-$root/../shared/data}
bench_build exflow_cli synthetic_trace
exflow=$build/bin/exflow

machine
echo

# solve_json OUT TRACE P N [solve args...]: the solve's JSON in OUT, its wall seconds in OUT.s.
solve_json() {
  local out=$1 trace=$2 p=$3 n=$4
  shift 4
  /usr/bin/time -f "%e" -o "$out.s" "$exflow" solve "$trace" --gpus-per-node "$p" --nodes "$n" \
    --out-dir "$work/solutions" --json --quiet "$@" >"$out"
}

# field JSON EXPR: a value of the solve's JSON (python expression on j).
field() {
  python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"
}

# row LABEL JSON: one table row, the deepep and deepep-ll figures of the placement.
row() {
  python3 - "$1" "$2" <<'PY'
import json, sys
label, path = sys.argv[1:]
j = json.load(open(path))
s = j["schemes"]
d, ll, v = s["deepep"]["placement"], s["deepep-ll"]["placement"], s["deepep"]["vanilla"]
wall = float(open(path + ".s").read().split()[0])
print(f"| {label} | {j['load_ratio_max']:.3f} | {d['inter']:.3f} | {d['intra']:.3f} | "
      f"{d['cost']:.3f} | {ll['inter']:.3f} | {ll['cost']:.3f} | {v['inter']:.3f} | "
      f"{j['solve_seconds']:.2f} | {wall:.1f} |")
PY
}

# saving A B: how many fewer deepep inter-node transfers B needs than A, in percent.
saving() {
  python3 - "$1" "$2" <<'PY'
import json, sys
a, b = (json.load(open(p))["schemes"]["deepep"]["placement"]["inter"] for p in sys.argv[1:])
print(f"{100 * (a - b) / a:.1f}%" if a > 0 else "one node: none cross")
PY
}

header() {
  echo "| placement | load ratio (worst layer) | deepep inter/token | deepep intra/token | deepep cost | deepep-ll inter/token | deepep-ll cost | vanilla deepep inter/token | solve s | process s |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
}

if [[ -f "$shared/esft-intent-top6.npy" && $tables == *eplb* ]]; then
  echo "EPLB against exflow --scheme deepep at EPLB's load ratio"
  echo
  header
  summary=""
  for task in intent law; do
    t=$shared/esft-$task-top6.npy
    for shape in "4 2" "8 2" "8 1" "8 8"; do
      read -r p n <<<"$shape"
      solve_json "$work/eplb.json" "$t" "$p" "$n" --method eplb
      ratio=$(field "$work/eplb.json" "j['load_ratio_max']")
      row "ESFT $task, ${n}x$p, EPLB" "$work/eplb.json"
      # Hop costs: the default (inter-node 2, NVLink 1), then the bandwidth ratio of a 400 Gbit/s
      # NIC to 3600 Gbit/s of NVLink (9), the simulator's default network.
      for cost in 2 9; do
        solve_json "$work/deepep.json" "$t" "$p" "$n" --scheme deepep --max-load-ratio "$ratio" \
          --inter-cost "$cost"
        row "ESFT $task, ${n}x$p, exflow deepep, inter cost $cost" "$work/deepep.json"
        summary+="| ESFT $task | ${n}x$p | $ratio | $cost | $(saving "$work/eplb.json" "$work/deepep.json") |"$'\n'
      done
    done
  done
  echo
  echo "| trace | topology | load limit (EPLB's ratio) | inter-node hop cost | fewer inter-node transfers than EPLB |"
  echo "|---|---|---:|---:|---:|"
  printf "%s" "$summary"
  echo
fi

if [[ -f "$shared/esft-intent-top6.npy" && $tables == *replicas* ]]; then
  echo "One redundant slot per GPU: EPLB's replicas against exflow's, at EPLB's load ratio"
  echo
  header
  for task in intent law; do
    t=$shared/esft-$task-top6.npy
    for shape in "4 2" "8 2"; do
      read -r p n <<<"$shape"
      solve_json "$work/eplb.json" "$t" "$p" "$n" --method eplb --redundant 1
      ratio=$(field "$work/eplb.json" "j['load_ratio_max']")
      row "ESFT $task, ${n}x$p, EPLB, --redundant 1" "$work/eplb.json"
      for scheme in deepep-ll deepep; do
        solve_json "$work/x.json" "$t" "$p" "$n" --scheme "$scheme" --redundant 1 \
          --max-load-ratio "$ratio"
        row "ESFT $task, ${n}x$p, exflow $scheme, --redundant 1" "$work/x.json"
      done
    done
  done
  echo
fi

if [[ -f "$shared/esft-intent-top6.npy" && -z "${QUICK:-}" && $tables == *tradeoff* ]]; then
  echo "Trade-off: exflow --scheme deepep against the load limit (a limit below what any"
  echo "placement reaches is refused with the smallest feasible ratio)"
  echo
  header
  for task in intent law; do
    t=$shared/esft-$task-top6.npy
    for shape in "4 2" "8 2"; do
      read -r p n <<<"$shape"
      for limit in 1.05 1.1 1.3 none; do
        if solve_json "$work/x.json" "$t" "$p" "$n" --scheme deepep --max-load-ratio "$limit" \
          2>"$work/err"; then
          row "ESFT $task, ${n}x$p, limit $limit" "$work/x.json"
        else
          echo "| ESFT $task, ${n}x$p, limit $limit | refused: $(sed 's/.*smallest ratio/smallest ratio/' "$work/err") | | | | | | | | |"
        fi
      done
    done
  done
  echo
fi

if [[ -z "${QUICK:-}" && $tables == *scale* ]]; then
  echo "DeepSeek-V3 shape: 58 layers x 256 experts, top-8, 8 x 8 GPUs, 20 000 tokens"
  echo
  header
  "$build/bin/synthetic_trace" "$work/v3.npy" --tokens 20000 --layers 58 --experts 256 --k 8 \
    --seed 7 >/dev/null
  solve_json "$work/eplb.json" "$work/v3.npy" 8 8 --method eplb --expert-groups 8
  ratio=$(field "$work/eplb.json" "j['load_ratio_max']")
  row "V3 shape, EPLB (8 groups)" "$work/eplb.json"
  solve_json "$work/x.json" "$work/v3.npy" 8 8 --scheme deepep --max-load-ratio "$ratio"
  row "V3 shape, exflow deepep" "$work/x.json"
  solve_json "$work/x.json" "$work/v3.npy" 8 8 --scheme deepep --max-load-ratio "$ratio" \
    --token-time-limit 25
  row "V3 shape, exflow deepep, --token-time-limit 25" "$work/x.json"
  echo
  echo "Qwen3-235B shape: 94 layers x 128 experts, top-8, 8 x 8 GPUs, 20 000 tokens"
  echo
  header
  "$build/bin/synthetic_trace" "$work/qwen3.npy" --tokens 20000 --layers 94 --experts 128 --k 8 \
    --seed 7 >/dev/null
  solve_json "$work/eplb.json" "$work/qwen3.npy" 8 8 --method eplb
  ratio=$(field "$work/eplb.json" "j['load_ratio_max']")
  row "Qwen3 shape, EPLB" "$work/eplb.json"
  solve_json "$work/x.json" "$work/qwen3.npy" 8 8 --scheme deepep --max-load-ratio "$ratio" \
    --token-time-limit 25
  row "Qwen3 shape, exflow deepep, --token-time-limit 25" "$work/x.json"
fi
