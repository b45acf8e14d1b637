#!/usr/bin/env bash
# Installs the built exflow into a scratch prefix, then configures, builds and runs the
# find_package(exflow) example (examples/cpp) against it: the check that the install tree and
# its package config (exflow::exflow and its dependencies) are usable by a C++ program.
#
#   install_test.sh BUILD_DIR SOURCE_DIR SCRATCH_DIR CXX BUILD_TYPE GENERATOR CXX_FLAGS LINKER_FLAGS
#
# Everything it writes goes under SCRATCH_DIR (which it owns: emptied first, removed on
# success, kept on failure for a look). The build must be complete (exflow and exflow_cli).
set -euo pipefail
if [[ $# -ne 8 ]]; then
  echo "usage: $0 BUILD_DIR SOURCE_DIR SCRATCH_DIR CXX BUILD_TYPE GENERATOR CXX_FLAGS LINKER_FLAGS" >&2
  exit 2
fi
build_dir=$1 source_dir=$2 scratch=$3 cxx=$4 build_type=$5 generator=$6 cxx_flags=$7 linker_flags=$8
[[ -n $scratch && -n $build_dir ]] || { echo "install_test: empty BUILD_DIR or SCRATCH_DIR" >&2; exit 2; }
cmake=${CMAKE_COMMAND:-cmake}

rm -rf "$scratch"
mkdir -p "$scratch"
prefix="$scratch/prefix"
example_build="$scratch/example-build"

if ! "$cmake" --install "$build_dir" --prefix "$prefix" >"$scratch/install.log" 2>&1; then
  cat "$scratch/install.log" >&2
  echo "install_test: cmake --install failed (build the targets exflow and exflow_cli first)" >&2
  exit 1
fi
# The library directory is GNUInstallDirs' (lib, or lib/<multiarch> for a /usr prefix).
for f in bin/exflow include/exflow/solve.hpp; do
  [[ -e "$prefix/$f" ]] || { echo "install_test: $f is missing from $prefix" >&2; exit 1; }
done
for f in libexflow.a exflowConfig.cmake exflowConfigVersion.cmake exflowTargets.cmake; do
  if [[ -z $(find "$prefix" -name "$f" -print -quit) ]]; then
    echo "install_test: $f is missing from $prefix" >&2
    exit 1
  fi
done

if ! "$cmake" -S "$source_dir/examples/cpp" -B "$example_build" -G "$generator" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE="$build_type" \
  -DCMAKE_CXX_FLAGS="$cxx_flags" -DCMAKE_EXE_LINKER_FLAGS="$linker_flags" \
  >"$scratch/configure.log" 2>&1; then
  cat "$scratch/configure.log" >&2
  echo "install_test: configuring examples/cpp against $prefix failed" >&2
  exit 1
fi
# The package must come from the scratch prefix, not from an exflow installed elsewhere.
if ! grep -q "^exflow_DIR:PATH=$prefix/" "$example_build/CMakeCache.txt"; then
  grep "^exflow_DIR" "$example_build/CMakeCache.txt" >&2 || true
  echo "install_test: find_package(exflow) did not use $prefix" >&2
  exit 1
fi
if ! "$cmake" --build "$example_build" >"$scratch/build.log" 2>&1; then
  cat "$scratch/build.log" >&2
  echo "install_test: building examples/cpp failed" >&2
  exit 1
fi
if ! out=$("$example_build/exflow_example"); then
  echo "$out"
  echo "install_test: exflow_example failed" >&2
  exit 1
fi
echo "$out"
if ! grep -Eq '^vanilla cost [0-9.]+ solved cost [0-9.]+ ' <<<"$out"; then
  echo "install_test: unexpected output from exflow_example" >&2
  exit 1
fi
rm -rf "$scratch"
echo "install_test: ok"
