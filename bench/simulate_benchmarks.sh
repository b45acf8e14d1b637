#!/usr/bin/env bash
# Projected communication time per decode step for every model preset at 8, 16, 64 and 256 GPUs
# (8 per node), behind the simulator table of docs/results.md. For each preset: a synthetic
# trace of the preset's shape (layers, experts, top-k; bench/synthetic_trace, follow 0.6), a
# placement solved by `exflow solve` where the GPUs divide the experts, then `exflow simulate
# --model PRESET` with the default cluster. Prints a Markdown table.
#
#   BUILD_DIR   build directory (default: build/)
#   TOKENS      tokens per synthetic trace (default 10000)
#   GPUS        GPU counts (default "8 16 64 256")
#   SOLVE_ARGS  extra `exflow solve` options (default: --time-limit 10 --token-time-limit 20)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tokens=${TOKENS:-10000}
read -r -a gpu_counts <<<"${GPUS:-8 16 64 256}"
read -r -a solve_args <<<"${SOLVE_ARGS:---time-limit 10 --token-time-limit 20}"
bench_build exflow_cli synthetic_trace
exflow=$build/bin/exflow

echo "$(machine); $tokens tokens per trace"
echo
echo "| preset | GPUs | baseline/vanilla ms | exflow/vanilla ms (all-to-all + all-gather) | exflow/solved ms (all-to-all + all-gather) | speedup exflow/vanilla | speedup exflow/solved | solve s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for preset in mixtral-8x7b mixtral-8x22b deepseek-v3 qwen3-235b-a22b olmoe-1b-7b; do
  read -r layers experts k < <(python3 - "$preset" <<'PY'
import sys
shapes = {"mixtral-8x7b": (32, 8, 2), "mixtral-8x22b": (56, 8, 2), "deepseek-v3": (58, 256, 8),
          "qwen3-235b-a22b": (94, 128, 8), "olmoe-1b-7b": (16, 64, 8)}
print(*shapes[sys.argv[1]])
PY
)
  trace=$work/$preset.npy
  "$build/bin/synthetic_trace" --tokens "$tokens" --layers "$layers" --experts "$experts" --k "$k" \
    "$trace" >/dev/null
  for g in "${gpu_counts[@]}"; do
    nodes=$((g / 8))
    placement=()
    solve_seconds="n/a (E < G)"
    if ((experts % g == 0)); then
      start=$(date +%s.%N)
      "$exflow" solve "$trace" --gpus-per-node 8 --nodes "$nodes" --out-dir "$work/solved-$preset-$g" \
        --quiet "${solve_args[@]}" >/dev/null
      solve_seconds=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" \
        "$start" "$(date +%s.%N)")
      placement=(--placement "$(ls "$work/solved-$preset-$g"/*.csv)")
    fi
    "$exflow" simulate "$trace" --gpus-per-node 8 --nodes "$nodes" --model "$preset" --json --quiet \
      "${placement[@]}" >"$work/sim.json"
    python3 - "$preset" "$g" "$solve_seconds" "$work/sim.json" <<'PY'
import json, sys
preset, g, solve_seconds, path = sys.argv[1:]
c = {x["name"]: x for x in json.load(open(path))["configurations"]}
def ms(x):
    return (f"{1e3 * x['seconds_per_step']:.2f} ({1e3 * x['alltoall_seconds_per_step']:.2f} + "
            f"{1e3 * x['allgather_seconds_per_step']:.2f})")
b, v, s = c["baseline/vanilla"], c["exflow/vanilla"], c.get("exflow/placement")
print(f"| {preset} | {g} | {1e3 * b['seconds_per_step']:.2f} | {ms(v)} | "
      f"{ms(s) if s else 'n/a'} | {v['speedup']:.2f}x | "
      f"{str(round(s['speedup'], 2)) + 'x' if s else 'n/a'} | {solve_seconds} |")
PY
  done
done

# The bundled real trace (ESFT intent, top-6, and its column 0 as a top-1 trace): real affinity,
# placements solved with exflow solve's defaults, Mixtral-8x7B's sizes.
echo
echo "| bundled trace | GPUs | baseline/vanilla ms | exflow/vanilla ms (all-to-all + all-gather) | exflow/solved ms (all-to-all + all-gather) | speedup exflow/vanilla | speedup exflow/solved | cost solved / vanilla |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
trace=$root/examples/esft-intent-top6.npy
for topk in 6 1; do
  for shape in "4 1" "8 1" "8 2"; do
    read -r p n <<<"$shape"
    out=$work/real-$topk-$p-$n
    "$exflow" solve "$trace" --topk "$topk" --gpus-per-node "$p" --nodes "$n" --out-dir "$out" \
      --quiet >/dev/null
    "$exflow" simulate "$trace" --topk "$topk" --gpus-per-node "$p" --nodes "$n" \
      --model mixtral-8x7b --placement "$(ls "$out"/*.csv)" --json --quiet >"$work/sim.json"
    python3 - "top-$topk" "$((p * n))" "$work/sim.json" <<'PY'
import json, sys
label, g, path = sys.argv[1:]
c = {x["name"]: x for x in json.load(open(path))["configurations"]}
def ms(x):
    return (f"{1e3 * x['seconds_per_step']:.3f} ({1e3 * x['alltoall_seconds_per_step']:.3f} + "
            f"{1e3 * x['allgather_seconds_per_step']:.3f})")
b, v, s = c["baseline/vanilla"], c["exflow/vanilla"], c["exflow/placement"]
print(f"| {label} | {g} | {1e3 * b['seconds_per_step']:.3f} | {ms(v)} | {ms(s)} | "
      f"{v['speedup']:.2f}x | {s['speedup']:.2f}x | {s['cost']:.2f} / {v['cost']:.2f} |")
PY
  done
done
