#!/usr/bin/env bash
# Builds bench/trace_throughput (Release) and runs each case in its own process, so that every
# peak-RSS figure belongs to that case alone. Prints the machine and a Markdown table of the
# medians over REPETITIONS runs of 5 iterations each: transitions per second and milliseconds
# per pass of wall-clock time and, for threads = 1, transitions per second of CPU time of the
# thread that does the work (steadier on a loaded machine); then the whole-process comparison of
# `exflow profile` with NumPy (bench/profile_vs_numpy.sh).
#
#   BUILD_DIR           build directory (default: build/ in the repository)
#   REPETITIONS         runs per case (default 3)
#   EXFLOW_BENCH_TRACE  keep the synthetic trace at this path (default: a temporary directory)
# Extra arguments are passed to the benchmark binary.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
repetitions=${REPETITIONS:-3}

bench_build trace_throughput
bin=$build/bin/trace_throughput
export EXFLOW_BENCH_TRACE=${EXFLOW_BENCH_TRACE:-$work/trace.npy}

# The row to keep: the median over the repetitions, or the only run.
if ((repetitions > 1)); then row='/real_time_median"'; else row='/real_time"'; fi

machine
echo "load:    $(cut -d" " -f1-3 /proc/loadavg) (1, 5, 15 min), before the runs"
echo "trace:   $EXFLOW_BENCH_TRACE"
# Write (or check) the trace once, outside the measured processes.
"$bin" --benchmark_list_tests=true "$@" >/dev/null 2>"$work/log" || { cat "$work/log"; exit 1; }

for name in profile eval_vanilla eval_random; do
  for threads in 1 2; do
    "$bin" --benchmark_filter="^$name/threads:$threads/" \
      --benchmark_repetitions="$repetitions" --benchmark_report_aggregates_only=true \
      --benchmark_format=csv "$@" >"$work/out.csv" 2>"$work/log" || { cat "$work/log"; exit 1; }
    header=$(head -n 1 "$work/out.csv")
    grep -F "$row" "$work/out.csv" >>"$work/rows.csv"
  done
done

# Columns are looked up by name in the CSV header.
awk -F, -v header="$header" '
  BEGIN {
    n = split(header, h, ",")
    for (i = 1; i <= n; ++i) { gsub(/"/, "", h[i]); col[h[i]] = i }
    print "| case | threads | M transitions/s | ms per pass | M transitions per CPU s |" \
          " peak RSS MiB | trace MiB | trace + workers x matrix MiB | RSS before trace MiB |"
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|"
  }
  {
    gsub(/"/, "", $1)
    split($1, parts, "/")
    sub(/threads:/, "", parts[2])
    per_cpu = parts[2] == 1 ? sprintf("%.0f", $col["items_per_second"] / 1e6 * \
                                       $col["real_time"] / $col["cpu_time"]) : "-"
    printf "| %s | %s | %.0f | %.0f | %s | %.1f | %.1f | %.1f | %.1f |\n", parts[1], parts[2],
           $col["items_per_second"] / 1e6, $col["real_time"], per_cpu, $col["peak_rss_MiB"],
           $col["trace_MiB"], $col["bound_MiB"], $col["base_MiB"]
  }' "$work/rows.csv"

echo
"$root/bench/profile_vs_numpy.sh"
