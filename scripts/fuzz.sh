#!/usr/bin/env bash
# Runs each fuzz target of fuzz/ for a number of executions, one at a time.
#
#   scripts/fuzz.sh [RUNS] [TARGET...]     # default: 1000000 runs, every target
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain
# (`cargo +nightly`), or stable with RUSTC_BOOTSTRAP=1 (FUZZ_TOOLCHAIN=stable).
# No sanitizer (the crate forbids unsafe code), debug assertions on (so an
# overflow is a crash). The corpus grows in fuzz/corpus/TARGET from the
# seeds in fuzz/seeds/TARGET; crashes land in fuzz/artifacts/TARGET.
# Figures of each run: fuzz/logs/TARGET.log (last lines: libFuzzer's stats).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../fuzz"

RUNS=${1:-1000000}
shift || true
if [[ "${FUZZ_TOOLCHAIN:-nightly}" == stable ]]; then
    fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
else
    fuzz=(cargo +nightly fuzz)
fi
if (($#)); then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi
mkdir -p logs
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    echo "== fuzz $t: $RUNS runs"
    start=$SECONDS
    if "${fuzz[@]}" run --sanitizer none --debug-assertions "$t" "corpus/$t" "seeds/$t" -- \
        -runs="$RUNS" -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"logs/$t.log" 2>&1; then
        echo "   ok in $((SECONDS - start)) s: $(grep -E '^#[0-9]+.*(DONE|cov)' "logs/$t.log" | tail -n 1)"
    else
        status=1
        echo "   CRASH (see fuzz/logs/$t.log and fuzz/artifacts/$t):"
        grep -E 'panicked at|Test unit written' -A2 "logs/$t.log" | head -n 12 | sed 's/^/   /'
    fi
done
exit $status
