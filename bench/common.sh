# Sourced by the bench scripts: where the repository and its Release build are, a scratch
# directory removed on exit, and the build of the targets a script measures.
#
#   BUILD_DIR   build directory (default: build/)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-$root/build}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# bench_build TARGET...: configures the Release build (benchmarks on) and builds the targets.
bench_build() {
  cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DEXFLOW_BUILD_BENCH=ON >/dev/null
  cmake --build "$build" -j"$(nproc)" --target "$@" >/dev/null
}

# machine: the line every table starts with.
machine() {
  echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
}
