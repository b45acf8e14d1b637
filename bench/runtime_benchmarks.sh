#!/usr/bin/env bash
# exflow-run on the bundled real trace (ESFT intent, top-6, 26 layers x 64 experts): time and
# bytes per decode step for baseline/vanilla, exflow/vanilla and exflow/solved on RANKS ranks
# (default 4, one node), the all-gather shown apart, plus the prefill step. Prints a Markdown
# table for docs/results.md. Every configuration must reproduce the reference's checksum and
# the evaluator's all-to-all bytes; the script fails otherwise.
#
#   BUILD_DIR   build directory (default: build/)
#   RANKS       MPI ranks (default 4); the solved placement is examples/...solved-1x4.csv, so
#               other counts run the two vanilla rows only
#   ARGS        extra exflow-run options (default: the defaults, batch 8 x seq-len 64, H 256)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ranks=${RANKS:-4}
read -r -a extra <<<"${ARGS:-}"
bench_build exflow_run_cli
run=$build/bin/exflow-run
trace=$root/examples/esft-intent-top6.npy
solved=$root/examples/esft-intent-top6.solved-1x4.csv
# As root, mpirun needs these; containers may forbid Open MPI's cross-memory attach.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=${OMPI_MCA_btl_vader_single_copy_mechanism:-none}

echo "$(machine); $ranks ranks"
echo

"$run" --trace "$trace" --mode reference --json "${extra[@]}" >"$work/reference.json"

row() {
  local label=$1 mode=$2
  shift 2
  mpirun -np "$ranks" --oversubscribe "$run" --trace "$trace" --mode "$mode" --json \
    "${extra[@]}" "$@" >"$work/out.json"
  python3 - "$label" "$work/out.json" "$work/reference.json" <<'PY'
import json, sys
label, path, ref_path = sys.argv[1:]
j = json.load(open(path))
ref = json.load(open(ref_path))
if j["checksum"] != ref["checksum"]:
    sys.exit(f"{label}: checksum {j['checksum']} differs from the reference's {ref['checksum']}")
if not j["cost_model"]["matches"]:
    sys.exit(f"{label}: all-to-all bytes differ from the evaluator's prediction")
d, p = j["decode"], j["prefill_step"]
mib = 1 / 1024
print(f"| {label} | {1e3 * d['seconds_per_step']:.1f} | {d['alltoall_bytes_per_step'] * mib:.1f} | "
      f"{d['allgather_bytes_per_step'] * mib:.1f} | "
      f"{(d['alltoall_bytes_per_step'] + d['allgather_bytes_per_step']) * mib:.1f} | "
      f"{1e3 * p['seconds']:.0f} | {p['alltoall_bytes_per_step'] * mib:.0f} | "
      f"{p['allgather_bytes_per_step'] * mib:.0f} | {j['alltoall_bytes'] * mib:.0f} | "
      f"{j['tokens_per_second']:.1f} | {j['checksum']} |")
PY
}

echo "| configuration | decode ms/step | decode all-to-all KiB/step | decode all-gather KiB/step | decode total KiB/step | prefill ms | prefill all-to-all KiB | prefill all-gather KiB | all-to-all KiB, whole run | tokens/s | checksum |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
row "baseline / vanilla" baseline
row "exflow / vanilla" exflow
if [[ "$ranks" == 4 ]]; then row "exflow / solved" exflow --placement "$solved"; fi
echo
echo "reference checksum $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["checksum"])' "$work/reference.json")"
