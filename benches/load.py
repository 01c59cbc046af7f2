#!/usr/bin/env python3
"""Load test: luot against a bare hyper baseline, side by side.

    python3 benches/load.py                 # embedded and Redis stores, 5 rounds
    python3 benches/load.py --stores embedded --rounds 3 --duration 5
    python3 benches/load.py --rounds 3 --skip-memory --paced-ms 1   # and below saturation
    python3 benches/load.py --stores redis --redis-nice 0     # Redis at luot's priority

Builds release binaries, starts the baseline (benches/baseline.rs) and luot
(with trusted_proxies = loopback, rate limiting on, bots excluded), pins the
servers to core 0 and wrk to core 1, and alternates baseline/luot for each
route and round. Prints medians and the ratio luot/baseline for requests/s
and p99 latency, luot's RSS, Redis commands/s during the run, and checks
that luot counted exactly the 2xx answers wrk saw. A memory phase measures
RSS per distinct page key at 10k and 100k pages.

Only loopback is targeted; every wrk run is bounded by --duration.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where cargo puts the builds (cargo reads a relative CARGO_TARGET_DIR from
# the directory it runs in, ROOT here).
TARGET = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target")
LUA = os.path.join(ROOT, "benches", "wrk", "luot.lua")
ROUTES = [
    ("quiet", "POST /hit?quiet=1"),
    ("gif", "GET /hit.gif"),
    ("answer", "POST /hit (figures)"),
    ("counters", "GET /api/v1/sites/{site}/counters"),
]
INGEST = {"quiet", "gif", "answer"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def need(tool, package):
    if shutil.which(tool):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True)
        return
    sys.exit(f"{tool} is missing: apt-get install {package}")


def cores():
    return len(os.sched_getaffinity(0))


def pin(core, argv):
    return ["taskset", "-c", str(core)] + argv if cores() >= 2 else argv


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    """CPU seconds (user + system) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wrk(port, mode, duration, connections, site="demo", pages=10000, cutoff=0, delay_ms=0):
    env = dict(os.environ, LUOT_BENCH_MODE=mode, LUOT_BENCH_SITE=site,
               LUOT_BENCH_PAGES=str(pages), LUOT_BENCH_CUTOFF=str(cutoff),
               LUOT_BENCH_DELAY_MS=str(delay_ms))
    argv = pin(1, ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                   "-s", LUA, f"http://127.0.0.1:{port}"])
    out = subprocess.run(argv, env=env, capture_output=True, text=True,
                         timeout=duration + 60).stdout
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no RESULT line:\n{out}")
    r = dict(kv.split("=") for kv in line.split()[1:])
    r = {k: int(v) for k, v in r.items()}
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
    r["ok"] = r["requests"] - r["non2xx"] - errors
    r["errors"] = errors
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


class Proc:
    def __init__(self, argv, env=None, log=None):
        self.log = open(log, "w") if log else subprocess.DEVNULL
        self.p = subprocess.Popen(argv, env=env, stdout=self.log, stderr=self.log)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.p.kill()


def redis_calls(port):
    """(all commands, script calls) so far. INFO commandstats also counts
    the commands a script runs inside Redis (one per distinct key)."""
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                         capture_output=True, text=True).stdout
    total = scripts = 0
    for line in out.splitlines():
        if line.startswith("cmdstat_"):
            name = line.split(":", 1)[0]
            fields = dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))
            total += int(fields["calls"])
            if name in ("cmdstat_evalsha", "cmdstat_eval"):
                scripts += int(fields["calls"])
    return total, scripts


def start_luot(tmp, store, redis_port, extra_toml=""):
    port, admin = free_port(), free_port()
    data = tempfile.mkdtemp(dir=tmp)
    conf = os.path.join(data, "bench.toml")
    with open(conf, "w") as f:
        f.write(extra_toml)
    env = dict(os.environ, LUOT_LISTEN=f"127.0.0.1:{port}", LUOT_ADMIN_LISTEN=f"127.0.0.1:{admin}",
               LUOT_DATA_DIR=data, LUOT_TRUSTED_PROXIES="127.0.0.1", LUOT_CONFIG=conf,
               RUST_LOG="warn")
    if store == "redis":
        env["LUOT_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/"
    proc = Proc(pin(0, [os.path.join(TARGET, "release", "luot"), "serve"]), env=env,
                log=os.path.join(data, "luot.log"))
    wait_port(port)
    proc.admin = admin
    return proc, port


def flush_batches(luot):
    """Batches luot has applied so far (luot_flush_batch_keys_count)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{luot.admin}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("luot_flush_batch_keys_count"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def site_total(port, site="demo"):
    return get_json(f"http://127.0.0.1:{port}/api/v1/sites/{site}/counters")["total"]


def settle(port, want, timeout=30):
    """Waits until the site total stops moving (flushed) and returns it."""
    end = time.time() + timeout
    last = None
    while time.time() < end:
        now = site_total(port)
        if now == last and (want is None or now >= want):
            return now
        last = now
        time.sleep(1.5)
    return last


def alternating(args, baseline_port, port):
    """(round, route, "base" | "luot", port) for every wrk run of a phase:
    each round runs each route on both servers, the baseline first in even
    rounds and luot first in odd ones."""
    for rnd in range(args.rounds):
        for mode, _ in ROUTES:
            order = [("base", baseline_port), ("luot", port)]
            if rnd % 2:
                order.reverse()
            for who, p in order:
                yield rnd, mode, who, p


def run_store(args, tmp, store, baseline_port):
    redis = None
    redis_port = None
    if store == "redis":
        redis_port = free_port()
        rdir = tempfile.mkdtemp(dir=tmp)
        # Redis stands in for a store on a machine of its own, but shares
        # the servers' core here: at luot's priority the kernel lets a
        # flush's script hold that core a whole timer tick while requests
        # wait. Run it as the README's production checklist has a Redis
        # that shares luot's machine run.
        nice = ["nice", "-n", str(args.redis_nice)] if args.redis_nice else []
        redis = Proc(pin(0, nice + ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                             "--dir", rdir]))
        wait_port(redis_port)
    luot, port = start_luot(tmp, store, redis_port)
    results = {mode: {"base": [], "luot": []} for mode, _ in ROUTES}
    ok_ingest = 0
    # Warm both servers (connections, caches, the 10,000 pages) unmeasured.
    for p in (baseline_port, port):
        wrk(p, "quiet", 2, args.connections)
    warm = settle(port, None)
    calls_before = redis_calls(redis_port) if redis else (0, 0)
    redis_cpu_before = cpu_s(redis.p.pid) if redis else 0.0
    batches_before = flush_batches(luot)
    t0 = time.time()
    try:
        for rnd, mode, who, p in alternating(args, baseline_port, port):
            r = wrk(p, mode, args.duration, args.connections)
            results[mode][who].append(r)
            if who == "luot" and mode in INGEST:
                ok_ingest += r["ok"]
            print(f"  [{store}] round {rnd + 1} {mode:8} {who:4} "
                  f"{r['rps']:>10.0f} req/s  p99 {r['p99_us']:>6} us  "
                  f"non2xx {r['non2xx']} errors {r['errors']}", flush=True)
        elapsed = time.time() - t0
        after = redis_calls(redis_port) if redis else (0, 0)
        calls = (after[0] - calls_before[0], after[1] - calls_before[1])
        redis_cpu = cpu_s(redis.p.pid) - redis_cpu_before if redis else 0.0
        rss = rss_kib(luot.p.pid)
        batches = flush_batches(luot) - batches_before
        paced = paced_rounds(args, port, baseline_port, store) if args.paced_ms else None
        # Exactness: a separate run whose beacons all finish before wrk
        # stops (only /healthz is sent in its last second), every 2xx
        # beacon seen must be counted once.
        before = settle(port, None)
        check = wrk(port, "quiet", 4, args.connections, cutoff=3)
        answered = check["beacons"] - check["non2xx"] - check["errors"]
        total = settle(port, before + answered)
        counted = total - before
    finally:
        luot.stop()
        if redis:
            redis.stop()
    print(f"\n== {store} store: medians of {args.rounds} rounds, wrk -t1 -c{args.connections} "
          f"-d{args.duration}s, servers on core 0, wrk on core 1"
          + (f", redis-server at nice {args.redis_nice}" if redis else ""))
    print(f"{'route':38} {'baseline/s':>11} {'luot/s':>11} {'ratio':>6} "
          f"{'p99 base':>9} {'p99 luot':>9} {'ratio':>6}")
    for mode, label in ROUTES:
        b = results[mode]["base"]
        l = results[mode]["luot"]
        b_rps = statistics.median(r["rps"] for r in b)
        l_rps = statistics.median(r["rps"] for r in l)
        b_p99 = statistics.median(r["p99_us"] for r in b)
        l_p99 = statistics.median(r["p99_us"] for r in l)
        print(f"{label:38} {b_rps:>11.0f} {l_rps:>11.0f} {l_rps / b_rps:>6.2f} "
              f"{b_p99:>7.0f}us {l_p99:>7.0f}us {l_p99 / max(b_p99, 1):>6.2f}")
    if paced:
        print_paced(args, paced)
    print(f"luot RSS after the run: {rss / 1024:.1f} MiB")
    # The flusher must keep up while requests keep the core busy: about
    # one batch per flush interval (1 s) over the beacon routes.
    beacon_s = args.rounds * len(INGEST) * args.duration
    print(f"flush batches applied during the run: {batches:.0f} in {elapsed:.0f} s, "
          f"of which luot took beacons for {beacon_s} s "
          f"({batches / beacon_s:.2f} per second of beacons)")
    if redis:
        print(f"Redis commands/s during the run: {calls[0] / elapsed:.1f} in all "
              f"({calls[0]} in {elapsed:.0f} s, including those scripts run inside Redis); "
              f"script calls/s: {calls[1] / elapsed:.1f}")
        print(f"Redis CPU during the run: {redis_cpu * 1000 / elapsed:.0f} ms/s "
              f"(on the servers' core)")
    verdict = "OK" if counted == answered else "MISMATCH"
    print(f"exactness run: {answered} beacons answered 2xx, {counted} counted: {verdict} "
          f"(over the whole run luot counted {total - warm} beacons)")
    return counted == answered


def paced_rounds(args, port, baseline_port, store):
    """Each route again with every connection waiting --paced-ms before each
    request: an offered load below what either server takes, so latency is
    the servers' own, not a queue's. Counted beacons stay out of the
    exactness check (it runs after)."""
    results = {mode: {"base": [], "luot": []} for mode, _ in ROUTES}
    for rnd, mode, who, p in alternating(args, baseline_port, port):
        r = wrk(p, mode, args.duration, args.connections, delay_ms=args.paced_ms)
        results[mode][who].append(r)
        print(f"  [{store}] paced round {rnd + 1} {mode:8} {who:4} "
              f"{r['rps']:>10.0f} req/s  p50 {r['p50_us']:>6} us  p99 {r['p99_us']:>6} us",
              flush=True)
    return results


def print_paced(args, results):
    print(f"paced: each connection waits {args.paced_ms} ms before each request "
          f"(medians of {args.rounds} rounds)")
    print(f"{'route':38} {'base/s':>8} {'luot/s':>8} {'p50 base':>9} {'p50 luot':>9} "
          f"{'p99 base':>9} {'p99 luot':>9} {'ratio':>6}")
    for mode, label in ROUTES:
        b, l = results[mode]["base"], results[mode]["luot"]
        med = lambda rs, k: statistics.median(r[k] for r in rs)
        print(f"{label:38} {med(b, 'rps'):>8.0f} {med(l, 'rps'):>8.0f} "
              f"{med(b, 'p50_us'):>7.0f}us {med(l, 'p50_us'):>7.0f}us "
              f"{med(b, 'p99_us'):>7.0f}us {med(l, 'p99_us'):>7.0f}us "
              f"{med(l, 'p99_us') / max(med(b, 'p99_us'), 1):>6.2f}")


def memory_phase(args, tmp):
    toml = ("[counting]\nmax_pages = 200000\nrate_limit_per_second = 1000000\n"
            "rate_limit_burst = 1000000\n")
    luot, port = start_luot(tmp, "embedded", None, toml)
    try:
        wrk(port, "quiet", 2, args.connections, pages=10)
        time.sleep(2)
        base = rss_kib(luot.p.pid)
        points = []
        for pages in (10_000, 100_000):
            # Enough requests that nearly every page is touched.
            wrk(port, "quiet", max(4, pages // 20_000 + 4), args.connections, pages=pages)
            time.sleep(2.5)
            points.append((pages, rss_kib(luot.p.pid)))
    finally:
        luot.stop()
    print("\n== memory: RSS per distinct page key (embedded store)")
    print(f"warm, 10 pages: {base / 1024:.1f} MiB")
    for pages, rss in points:
        print(f"{pages:>7} pages: {rss / 1024:.1f} MiB  "
              f"({(rss - base) * 1024 / pages:.0f} bytes/page over the warm process)")
    (p1, r1), (p2, r2) = points
    print(f"growth from {p1} to {p2} pages: {(r2 - r1) * 1024 / (p2 - p1):.0f} bytes/page")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--stores", default="embedded,redis")
    ap.add_argument("--skip-build", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--paced-ms", type=int, default=0,
                    help="also run each route with every connection waiting this many ms "
                         "before each request (latency below saturation); 0 = off")
    ap.add_argument("--redis-nice", type=int, default=10,
                    help="nice value of redis-server on the servers' core, as the README "
                         "has a Redis sharing luot's machine run (0 = luot's priority)")
    args = ap.parse_args()

    need("wrk", "wrk")
    need("taskset", "util-linux")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if "redis" in stores:
        need("redis-server", "redis-server")
        need("redis-cli", "redis-tools")
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "luot", "--example", "baseline"],
                       cwd=ROOT, check=True)
    print(f"machine: {os.cpu_count()} cores ({cores()} usable), "
          f"{os.uname().sysname} {os.uname().release}")
    tmp = tempfile.mkdtemp(prefix="luot-load-")
    baseline_port = free_port()
    baseline = Proc(pin(0, [os.path.join(TARGET, "release", "examples", "baseline"),
                            f"127.0.0.1:{baseline_port}"]))
    wait_port(baseline_port)
    ok = True
    try:
        for store in stores:
            ok &= run_store(args, tmp, store, baseline_port)
        if not args.skip_memory:
            memory_phase(args, tmp)
    finally:
        baseline.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
