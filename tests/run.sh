#!/usr/bin/env bash
# The whole test suite, as the README gives it and CI runs it:
#   bash tests/run.sh
# Installs what is missing when it can (as root, from Debian packages), then
# runs the gates: rustfmt, clippy with warnings denied, every test, a bounded
# fuzz run (tests/fuzz/run.sh: 30 s per target on nightly, a skip message
# without it), a build of the benchmarks and a smoke run of the load script.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# The Redis tests start their own redis-server (and a cluster of six) on
# free loopback ports.
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
# The browser tests (tests/browser.rs) drive Debian's headless Chromium.
command -v chromium >/dev/null || need_apt+=(chromium)
# The load script's smoke run (below) drives wrk from Python.
command -v wrk >/dev/null || need_apt+=(wrk)
command -v python3 >/dev/null || need_apt+=(python3)
# The deploy/ validators (tests/validate-deploy.sh, which fails under
# CI=true when one is missing): nginx -t, systemd-analyze verify, and a
# venv for the Python ones (yamllint, check-jsonschema,
# kubernetes-validate, installed there with pip). promtool it unpacks
# from Debian's prometheus package itself, so no daemon is installed.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
command -v dpkg-deb >/dev/null || need_apt+=(dpkg)
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
# One round of one second per route and store: too short for its ratios to
# mean anything, but it runs the script end to end (release build,
# baseline, both stores under wrk) and fails unless luot counted exactly
# the beacons wrk saw answered. Loopback only, bounded by its durations.
echo "== load script smoke (benches/load.py, 1 round of 1 s, both stores, exactness)"
python3 benches/load.py --rounds 1 --duration 1 --skip-memory >target/load-smoke.log 2>&1 ||
    { cat target/load-smoke.log; exit 1; }
grep -E "^exactness run" target/load-smoke.log
echo "== all gates passed"
