#!/usr/bin/env bash
# The whole test suite, as the README gives it and CI runs it:
#   bash tests/run.sh
# Installs what is missing when it can (as root, from Debian packages), then
# runs the gates: rustfmt, clippy with warnings denied, every test, a bounded
# fuzz run (tests/fuzz/run.sh: 30 s per target on nightly, a skip message
# without it) and a build of the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# The Redis tests start their own redis-server (and a cluster of six) on
# free loopback ports.
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
# The browser tests (tests/browser.rs) drive Debian's headless Chromium.
command -v chromium >/dev/null || need_apt+=(chromium)
if ! command -v cargo >/dev/null; then
    echo "cargo is missing: install Rust (rustup) first" >&2
    exit 1
fi
if ((${#need_apt[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
    else
        echo "missing: ${need_apt[*]} — install them (apt-get install ${need_apt[*]})" >&2
        exit 1
    fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --all-targets --quiet 2>&1
echo "== deploy/ validators (tests/validate-deploy.sh)"
bash tests/validate-deploy.sh
echo "== fuzz (bounded; skipped without a nightly toolchain)"
bash tests/fuzz/run.sh
echo "== cargo bench --no-run"
cargo bench --no-run --quiet
echo "== all gates passed"
