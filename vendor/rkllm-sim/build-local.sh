#!/bin/sh
# Builds the simulator by hand with the same command build.rs uses (for manual runs only):
#   vendor/rkllm-sim/build-local.sh 1.2|1.3 OUTDIR   ->   OUTDIR/librkllmrt.so
set -eu

usage="usage: $0 1.2|1.3 OUTDIR"
abi=${1:?$usage}
outdir=${2:?$usage}
case "$abi" in
    1.2 | 1.3) ;;
    *) echo "$usage" >&2; exit 2 ;;
esac

mkdir -p "$outdir"
out=$(cd "$outdir" && pwd)/librkllmrt.so
cd "$(dirname "$0")/../.."  # the repository root: the command uses repo-relative paths

# CXX is left unquoted on purpose so that e.g. CXX="ccache g++" works.
${CXX:-g++} -std=c++17 -O2 -fPIC -shared -pthread -Wall -Wextra \
    -I "vendor/rkllm/$abi" \
    -DRKLLM_SIM_ABI_MINOR="${abi#1.}" \
    vendor/rkllm-sim/src/*.cpp -Wl,-soname,librkllmrt.so -o "$out"
echo "$out"
