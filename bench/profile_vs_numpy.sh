#!/usr/bin/env bash
# Whole-process time of `exflow profile --threads 1` against a NumPy script doing the counting
# part of the same job, on one synthetic trace (TOKENS x 58 layers, 256 experts, top-1, '<i2',
# written by build/bin/synthetic_trace, seed 1). Prints the machine, the load average and a
# Markdown table: the wall-clock seconds of three runs of each, the best, and the ratio of the
# best times (NumPy seconds / exflow seconds).
#
#   exflow: reads and validates the trace, counts the inter-layer transitions and the loads,
#           computes the profile (top-successor share and mutual information of every layer
#           pair, load skew of every layer) and writes it as text (stdout, to a file).
#   NumPy:  np.load, then per layer pair np.bincount(a[:, l] * E + a[:, l + 1], minlength=E*E)
#           and per layer np.bincount(a[:, l], minlength=E), E = largest id + 1; np.save of the
#           [L-1, E, E] counts and the [L, E] loads.
#
#   BUILD_DIR   build directory (default: build/)
#   TOKENS      tokens of the trace (default 1 000 000)
#   PYTHON      an interpreter with numpy (default: /usr/bin/python3)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
tokens=${TOKENS:-1000000}
python=${PYTHON:-/usr/bin/python3}
bench_build exflow_cli synthetic_trace

cat >"$work/peer.py" <<'PY'
import sys
import numpy as np

trace_path, out_dir = sys.argv[1:]
a = np.load(trace_path)
E = int(a.max()) + 1
L = a.shape[1]
transitions = np.empty((L - 1, E, E), dtype=np.int64)
loads = np.empty((L, E), dtype=np.int64)
col = a[:, 0].astype(np.int64)
loads[0] = np.bincount(col, minlength=E)
for l in range(L - 1):
    nxt = a[:, l + 1].astype(np.int64)
    transitions[l] = np.bincount(col * E + nxt, minlength=E * E).reshape(E, E)
    loads[l + 1] = np.bincount(nxt, minlength=E)
    col = nxt
np.save(f"{out_dir}/transitions.npy", transitions)
np.save(f"{out_dir}/loads.npy", loads)
PY

"$build/bin/synthetic_trace" "$work/trace.npy" --tokens "$tokens" --layers 58 --experts 256 \
  --seed 1 >/dev/null

# run NAME COMMAND...: three runs; appends "seconds peak-RSS-KiB" lines to $work/NAME.times.
run() {
  local name=$1
  shift
  for _ in 1 2 3; do
    /usr/bin/time -f "%e %M" -a -o "$work/$name.times" "$@" >"$work/$name.out"
  done
}
run exflow "$build/bin/exflow" profile "$work/trace.npy" --threads 1 --quiet
run numpy "$python" "$work/peer.py" "$work/trace.npy" "$work"

machine
echo "load:    $(cut -d' ' -f1-3 /proc/loadavg) (1, 5, 15 min), before the runs ended"
echo "trace:   $tokens tokens x 58 layers, 256 experts, top-1, '<i2'" \
  "($(($(stat -c %s "$work/trace.npy") / 1048576)) MiB)"
echo
echo "| process | run 1 s | run 2 s | run 3 s | best s | peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|"
for name in exflow numpy; do
  awk -v name="$name" '
    { s[NR] = $1; if (NR == 1 || $1 < best) best = $1; if ($2 > rss) rss = $2 }
    END { printf "| %s | %.2f | %.2f | %.2f | %.2f | %.0f |\n", name, s[1], s[2], s[3], best,
          rss / 1024 }' "$work/$name.times"
done
awk 'FNR == 1 { file++ } { if (!(file in best) || $1 < best[file]) best[file] = $1 }
  END { printf "\nNumPy / exflow (best of three): %.1fx\n", best[2] / best[1] }' \
  "$work/exflow.times" "$work/numpy.times"
