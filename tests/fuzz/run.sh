#!/usr/bin/env bash
# Bounded fuzzing of luot's parsers (cargo-fuzz, libFuzzer):
#   beacon — ingest::parse_body and ingest::parse_query
#   page   — page::normalize (and normalize_into)
#   wal    — wal::Wal::open on a data dir holding the input as luot.wal
#
#   bash tests/fuzz/run.sh            # 30 s per target
#   FUZZ_SECONDS=300 bash tests/fuzz/run.sh
#   FUZZ_SANITIZER=address bash tests/fuzz/run.sh
#
# Needs a nightly toolchain (`cargo +nightly`). Without one it prints why and
# exits 0, so CI never fails merely because nightly is absent; cargo-fuzz is
# installed (cargo install cargo-fuzz) only when nightly exists. A crash, a
# failed property, a leak or a timeout found by a fuzzer fails the script;
# the reproducer is kept under tests/fuzz/artifacts/<target>/.
#
# The seed corpus under tests/fuzz/corpus/<target>/ is read, never written:
# inputs the fuzzer finds go to a scratch directory under tests/fuzz/target.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-30}"
sanitizer="${FUZZ_SANITIZER:-none}"
targets=(beacon page wal)

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz: skipped — no nightly toolchain (rustup toolchain install nightly to run it)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is missing; installing it (cargo install cargo-fuzz)"
    if ! cargo install cargo-fuzz --locked --quiet; then
        echo "fuzz: skipped — cargo-fuzz could not be installed"
        exit 0
    fi
fi

echo "fuzz: building ${targets[*]} (sanitizer: $sanitizer)"
cargo +nightly fuzz build --fuzz-dir "$PWD" --sanitizer "$sanitizer"

failed=()
for t in "${targets[@]}"; do
    scratch="target/fuzz-corpus/$t"
    artifacts="artifacts/$t"
    mkdir -p "$scratch" "$artifacts"
    echo "== fuzz $t for ${seconds}s"
    log="target/fuzz-$t.log"
    if cargo +nightly fuzz run --fuzz-dir "$PWD" --sanitizer "$sanitizer" "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
        grep -E "stat::number_of_executed_units|stat::new_units_added" "$log" | tr '\n' ' '
        grep -Eo "cov: [0-9]+ ft: [0-9]+ corp: [0-9]+/[0-9]+[a-zA-Z]*" "$log" | tail -n 1
    else
        echo "fuzz: $t FAILED — reproducer in tests/fuzz/$artifacts/; log tail:"
        tail -n 40 "$log"
        failed+=("$t")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz: crashes found in: ${failed[*]}"
    exit 1
fi
echo "fuzz: no crash in ${targets[*]} (${seconds}s each)"
