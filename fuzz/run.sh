#!/usr/bin/env bash
# Builds every fuzz target and runs each for SECONDS (default 20) from its seeds in
# fuzz/seeds/, one after the other; fails on the first crash, hang or invariant failure.
#
#   fuzz/run.sh [SECONDS]
#
# cargo-fuzz needs nightly flags (-Zsanitizer=address); RUSTC_BOOTSTRAP=1 lets the stable
# toolchain take them. New inputs go to a scratch corpus that is removed afterwards; a crash
# leaves its input in fuzz/artifacts/<target>/ and the command that replays it in the log.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
SECONDS_EACH=${1:-20}
case $SECONDS_EACH in
    '' | *[!0-9]*)
        echo "usage: $0 [SECONDS]" >&2
        exit 2
        ;;
esac

fuzz_dir=$(cd "$(dirname "$0")" && pwd)
cd "$fuzz_dir"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# cargo fuzz has no --locked: check that the committed Cargo.lock is complete first.
cargo fetch --locked --quiet
cargo fuzz build

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

for target in $(cargo fuzz list); do
    echo "== $target: ${SECONDS_EACH}s"
    mkdir -p "$scratch/$target"
    log="$scratch/$target.log"
    # -timeout: an input taking over 10 s is a hang and fails the run like a crash.
    if ! cargo fuzz run "$target" "$scratch/$target" "seeds/$target" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 \
        -dict="dicts/$target.dict" -print_final_stats=1 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "FAIL: $target (input saved under fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1)
    echo "   ok: $execs executions, $cov, corpus $(find "$scratch/$target" -type f | wc -l) new inputs"
done
