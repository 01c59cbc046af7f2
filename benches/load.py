#!/usr/bin/env python3
"""Load test: luot against a bare hyper server, side by side, by CPU per request.

    python3 benches/load.py                 # embedded and Redis stores, 5 rounds, flood, memory
    python3 benches/load.py --stores embedded --rounds 3 --duration 5
    python3 benches/load.py --rounds 3 --skip-memory --paced-ms 1   # and below saturation
    python3 benches/load.py --stores redis --redis-nice 0     # Redis at luot's priority

Builds release binaries, starts the baseline (benches/baseline.rs: hyper's
defaults, reads the body, answers 204) and luot (trusted_proxies =
loopback, rate limiting on, bots excluded), pins the servers to core 0 and
wrk to core 1, and alternates baseline/luot for each route and round
(baseline first in even rounds, luot first in odd ones). wrk sends
requests built once by benches/wrk/luot.lua, so that it is not the
bottleneck.

Headline: the server's CPU per request (user + system of its process,
/proc/PID/stat, over each wrk run only), and the ratio baseline µs ÷ luot
µs of the medians. It does not depend on which side of the closed loop is
the slower. Beside it: requests/s and p99 (luot/baseline), wrk's own CPU
share of its run (wait4's rusage) and the server's, the busy share of both
cores from /proc/stat (other work on a shared machine shows there), and a
run is flagged client-bound when wrk was above 90 % of its core while the
server was not.

Then, per store: a read-flood run (quiet beacons while a second wrk asks
the figures of a new page each request, from 10 client addresses, paced
by --flood-delay-ms; 429 answers are expected), with the CPU per beacon,
the flood's cost included, against the baseline under the same flood;
luot's RSS, Redis commands/s and CPU; and exactness runs, plain and under
the flood: luot must have counted exactly the 2xx beacons wrk saw. A
memory phase measures RSS per distinct page key at 10k and 100k pages.

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
import threading
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
    ("pages", "GET /api/v1/sites/{site}/pages (30 paths)"),
]
INGEST = {"quiet", "gif", "answer"}
# A run is client-bound when wrk used more than this share of its core
# while the server used less.
CLIENT_BOUND = 0.90


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


def core_times():
    """(busy, total) jiffies of each CPU so far, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name = line.split(" ", 1)[0]
            if name.startswith("cpu") and name != "cpu":
                v = [int(x) for x in line.split()[1:]]
                total = sum(v[:8])  # guest time is already in user
                out[int(name[3:])] = (total - v[3] - v[4], total)
    return out


def run_client(argv, env, timeout):
    """Runs a load generator to its end: (stdout, its CPU seconds). The CPU
    is the child's own rusage (user + system) from wait4, so it is exact
    whatever else runs on its core."""
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True)
    out = []
    reader = threading.Thread(target=lambda: out.append(p.stdout.read()))
    reader.start()
    killer = threading.Timer(timeout, lambda: os.kill(p.pid, signal.SIGKILL))
    killer.start()
    try:
        _, status, usage = os.wait4(p.pid, 0)
    finally:
        killer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    return out[0], usage.ru_utime + usage.ru_stime


def wrk(port, mode, duration, connections, site="demo", pages=10000, cutoff=0, delay_ms=0,
        server=None, core=1, extra_env=None):
    """One wrk run. With `server` (a pid), also the server's CPU over the
    run: cpu_us (per request), srv_share and wrk_share (of a core),
    client_bound, and each core's busy share (busy0, busy1)."""
    env = dict(os.environ, LUOT_BENCH_MODE=mode, LUOT_BENCH_SITE=site,
               LUOT_BENCH_PAGES=str(pages), LUOT_BENCH_CUTOFF=str(cutoff),
               LUOT_BENCH_DELAY_MS=str(delay_ms), **(extra_env or {}))
    argv = pin(core, ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
                      "-s", LUA, f"http://127.0.0.1:{port}"])
    srv0 = cpu_s(server) if server else 0.0
    cores0 = core_times()
    t0 = time.monotonic()
    out, wrk_cpu = run_client(argv, env, duration + 60)
    wall = time.monotonic() - t0
    srv = cpu_s(server) - srv0 if server else 0.0
    cores1 = core_times()
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no RESULT line:\n{out}")
    r = dict(kv.split("=") for kv in line.split()[1:])
    r = {k: int(v) for k, v in r.items()}
    errors = r["connect"] + r["read"] + r["write"] + r["timeout"]
    r["ok"] = r["requests"] - r["non2xx"] - errors
    r["errors"] = errors
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["wall"] = wall
    r["wrk_cpu"] = wrk_cpu
    r["wrk_share"] = wrk_cpu / wall
    for c in (0, 1):
        busy = cores1.get(c, (0, 1))[0] - cores0.get(c, (0, 0))[0]
        total = cores1.get(c, (0, 1))[1] - cores0.get(c, (0, 0))[1]
        r[f"busy{c}"] = busy / max(total, 1)
    # Busy time of both cores that neither the server nor this wrk used:
    # Redis, a second wrk, or other work on a shared machine (in cores).
    r["other"] = max(0.0, r["busy0"] + r["busy1"] - r["wrk_share"] - srv / wall)
    if server:
        r["srv_cpu"] = srv
        r["srv_share"] = srv / wall
        r["cpu_us"] = 1e6 * srv / max(r["requests"], 1)
        r["client_bound"] = r["wrk_share"] > CLIENT_BOUND and r["srv_share"] < CLIENT_BOUND
    return r


def describe(r):
    """A run's figures for its progress line."""
    bound = "  CLIENT-BOUND" if r.get("client_bound") else ""
    return (f"{r['rps']:>8.0f} req/s {r.get('cpu_us', 0):>6.2f} us/req  p99 {r['p99_us']:>6} us  "
            f"server {r.get('srv_share', 0):>4.0%} wrk {r['wrk_share']:>4.0%} of a core, "
            f"cores busy {r['busy0']:>4.0%} {r['busy1']:>4.0%} (other work {r['other']:.2f} cores)  "
            f"non2xx {r['non2xx']} errors {r['errors']}{bound}")


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


def alternating(args, base, luot):
    """(round, route, "base" | "luot", server) for every wrk run of a phase,
    a server being (port, pid): each round runs each route on both servers,
    the baseline first in even rounds and luot first in odd ones."""
    for rnd in range(args.rounds):
        for mode, _ in ROUTES:
            order = [("base", base), ("luot", luot)]
            if rnd % 2:
                order.reverse()
            for who, server in order:
                yield rnd, mode, who, server


def med(rs, key):
    return statistics.median(r[key] for r in rs)


def store_reads(luot):
    """luot_store_reads_total summed over its labels, or None when this
    build has no such metric."""
    with urllib.request.urlopen(f"http://127.0.0.1:{luot.admin}/metrics", timeout=5) as r:
        lines = r.read().decode().splitlines()
    found = [float(l.rsplit(" ", 1)[1]) for l in lines if l.startswith("luot_store_reads_total")]
    return sum(found) if found else None


def flood_run(args, port, duration, server, cutoff=0):
    """Quiet beacons (the `wrk` of `server`, measured) while a second wrk
    floods the figures of pages never seen, on the same core. Returns the
    beacons' run (its CPU covers both loads) and the flood's."""
    flood = {}

    def flooder():
        flood.update(wrk(port, "flood", duration, args.flood_connections,
                         delay_ms=args.flood_delay_ms,
                         extra_env={"LUOT_BENCH_FLOOD_CLIENTS": str(args.flood_clients)}))

    t = threading.Thread(target=flooder)
    t.start()
    try:
        r = wrk(port, "quiet", duration, args.connections, cutoff=cutoff, server=server)
    finally:
        t.join()
    r["cpu_beacon_us"] = 1e6 * r["srv_cpu"] / max(r["requests"], 1)
    r["cpu_all_us"] = 1e6 * r["srv_cpu"] / max(r["requests"] + flood["requests"], 1)
    return r, flood


def flood_rounds(args, store, base, luot_srv, luot):
    """The read-flood phase: --rounds alternating rounds of flood_run."""
    results = {"base": [], "luot": []}
    reads0 = store_reads(luot)
    for rnd in range(args.rounds):
        order = [("base", base), ("luot", luot_srv)]
        if rnd % 2:
            order.reverse()
        for who, (p, pid) in order:
            r, f = flood_run(args, p, args.duration, pid)
            r["flood"] = f
            results[who].append(r)
            print(f"  [{store}] flood round {rnd + 1} {who:4} {describe(r)}; flood "
                  f"{f['rps']:.0f} req/s, non2xx {f['non2xx']}", flush=True)
    reads1 = store_reads(luot)
    results["store_reads"] = None if reads0 is None else reads1 - reads0
    return results


def run_store(args, tmp, store, base):
    redis = None
    redis_port = None
    if store == "redis":
        redis_port = free_port()
        rdir = tempfile.mkdtemp(dir=tmp)
        # Redis stands in for a store on a machine of its own, but shares
        # the servers' core here: at luot's priority the kernel lets a
        # flush's script hold that core a whole timer tick while requests
        # wait. Run it as the production checklist has a Redis
        # that shares luot's machine run (deploy/README.md).
        nice = ["nice", "-n", str(args.redis_nice)] if args.redis_nice else []
        redis = Proc(pin(0, nice + ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                             "--dir", rdir]))
        wait_port(redis_port)
    luot, port = start_luot(tmp, store, redis_port)
    luot_srv = (port, luot.p.pid)
    results = {mode: {"base": [], "luot": []} for mode, _ in ROUTES}
    # Warm both servers (connections, caches, the 10,000 pages) unmeasured.
    for p, _ in (base, luot_srv):
        wrk(p, "quiet", 2, args.connections)
    warm = settle(port, None)
    calls_before = redis_calls(redis_port) if redis else (0, 0)
    redis_cpu_before = cpu_s(redis.p.pid) if redis else 0.0
    batches_before = flush_batches(luot)
    t0 = time.time()
    try:
        for rnd, mode, who, (p, pid) in alternating(args, base, luot_srv):
            r0 = cpu_s(redis.p.pid) if redis and who == "luot" else 0.0
            r = wrk(p, mode, args.duration, args.connections, server=pid)
            if redis and who == "luot":
                r["redis_us"] = 1e6 * (cpu_s(redis.p.pid) - r0) / max(r["requests"], 1)
            results[mode][who].append(r)
            print(f"  [{store}] round {rnd + 1} {mode:8} {who:4} {describe(r)}", flush=True)
        elapsed = time.time() - t0
        after = redis_calls(redis_port) if redis else (0, 0)
        calls = (after[0] - calls_before[0], after[1] - calls_before[1])
        redis_cpu = cpu_s(redis.p.pid) - redis_cpu_before if redis else 0.0
        rss = rss_kib(luot.p.pid)
        batches = flush_batches(luot) - batches_before
        paced = paced_rounds(args, base, luot_srv, store) if args.paced_ms else None
        flood = None if args.skip_flood else flood_rounds(args, store, base, luot_srv, luot)
        # Exactness: a separate run whose beacons all finish before wrk
        # stops (only /healthz is sent in its last second), every 2xx
        # beacon seen must be counted once.
        before = settle(port, None)
        check = wrk(port, "quiet", 4, args.connections, cutoff=3)
        answered = check["beacons"] - check["non2xx"] - check["errors"]
        total = settle(port, before + answered)
        counted = total - before
        # The same under the read flood (the flood's reads count nothing).
        if flood is not None:
            check, _ = flood_run(args, port, 4, luot.p.pid, cutoff=3)
            f_answered = check["beacons"] - check["non2xx"] - check["errors"]
            f_total = settle(port, total + f_answered)
            f_counted = f_total - total
    finally:
        luot.stop()
        if redis:
            redis.stop()
    print_results(args, store, results, bool(redis))
    if paced:
        print_paced(args, paced)
    if flood:
        print_flood(args, store, results, flood)
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
    ok = counted == answered
    if flood is not None:
        verdict = "OK" if f_counted == f_answered else "MISMATCH"
        print(f"exactness run under the read flood: {f_answered} beacons answered 2xx, "
              f"{f_counted} counted: {verdict}")
        ok &= f_counted == f_answered
    return ok


def print_results(args, store, results, redis):
    """The headline table, Markdown, ready to paste into BENCHMARKS.md."""
    print(f"\n== {store} store: medians of {args.rounds} alternating rounds, wrk -t1 "
          f"-c{args.connections} -d{args.duration}s, servers on core 0, wrk on core 1"
          + (f", redis-server at nice {args.redis_nice} on core 0" if redis else ""))
    print("CPU ratio = baseline's server CPU per request / luot's (1.00: luot costs what a "
          "bare server does; higher is better); req/s ratio and p99 ratio = luot / baseline; "
          "wrk = wrk's CPU share of its core; client-bound = runs where wrk was above "
          f"{CLIENT_BOUND:.0%} of its core and the server below; other = busy time of the two "
          "cores that neither the server nor wrk used (Redis, other work on a shared machine), "
          "in cores: well above 0, the figures are not a quiet machine's.\n")
    redis_col = " Redis µs/req |" if redis else ""
    print(f"| route | baseline µs/req | luot µs/req | **CPU ratio** |{redis_col} baseline req/s "
          f"| luot req/s | req/s ratio | p99 base / luot | p99 ratio | wrk base / luot "
          f"| client-bound base / luot | other |")
    print("|---|---:|---:|---:|" + ("---:|" if redis else "") + "---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, label in ROUTES:
        b, l = results[mode]["base"], results[mode]["luot"]
        b_cpu, l_cpu = med(b, "cpu_us"), med(l, "cpu_us")
        b_rps, l_rps = med(b, "rps"), med(l, "rps")
        b_p99, l_p99 = med(b, "p99_us"), med(l, "p99_us")
        rcol = f" {med(l, 'redis_us'):.2f} |" if redis else ""
        print(f"| `{label}` | {b_cpu:.2f} | {l_cpu:.2f} | **{b_cpu / l_cpu:.2f}** |{rcol} "
              f"{b_rps:,.0f} | {l_rps:,.0f} | {l_rps / b_rps:.2f} | "
              f"{b_p99 / 1000:.2f} / {l_p99 / 1000:.2f} ms | {l_p99 / max(b_p99, 1):.2f} | "
              f"{med(b, 'wrk_share'):.0%} / {med(l, 'wrk_share'):.0%} | "
              f"{sum(r['client_bound'] for r in b)} / {sum(r['client_bound'] for r in l)} "
              f"of {len(b)} | {med(b + l, 'other'):.2f} |")
    print()
    # Issue 25: a front page's 30 view counts at >= 0.8x the rate of one
    # page's figures.
    pages, counters = med(results["pages"]["luot"], "rps"), med(results["counters"]["luot"], "rps")
    print(f"luot /pages (30 paths) ÷ /counters req/s: {pages / counters:.2f}\n")


def paced_rounds(args, base, luot_srv, store):
    """Each route again with every connection waiting --paced-ms before each
    request: an offered load below what either server takes, so latency is
    the servers' own, not a queue's. Counted beacons stay out of the
    exactness check (it runs after)."""
    results = {mode: {"base": [], "luot": []} for mode, _ in ROUTES}
    for rnd, mode, who, (p, pid) in alternating(args, base, luot_srv):
        r = wrk(p, mode, args.duration, args.connections, delay_ms=args.paced_ms, server=pid)
        results[mode][who].append(r)
        print(f"  [{store}] paced round {rnd + 1} {mode:8} {who:4} {describe(r)}", flush=True)
    return results


def print_paced(args, results):
    print(f"paced: each connection waits {args.paced_ms} ms before each request "
          f"(medians of {args.rounds} rounds); p99 ratio = luot / baseline\n")
    print("| route | base req/s | luot req/s | baseline µs/req | luot µs/req | CPU ratio "
          "| p50 base / luot | p99 base / luot | **p99 ratio** |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, label in ROUTES:
        b, l = results[mode]["base"], results[mode]["luot"]
        print(f"| `{label}` | {med(b, 'rps'):,.0f} | {med(l, 'rps'):,.0f} | "
              f"{med(b, 'cpu_us'):.2f} | {med(l, 'cpu_us'):.2f} | "
              f"{med(b, 'cpu_us') / med(l, 'cpu_us'):.2f} | "
              f"{med(b, 'p50_us'):.0f} / {med(l, 'p50_us'):.0f} µs | "
              f"{med(b, 'p99_us'):.0f} / {med(l, 'p99_us'):.0f} µs | "
              f"**{med(l, 'p99_us') / max(med(b, 'p99_us'), 1):.2f}** |")
    print()


def print_flood(args, store, results, flood):
    """The read-flood run beside the plain quiet route."""
    print(f"read flood: quiet beacons (wrk -c{args.connections}) while a second wrk "
          f"(-c{args.flood_connections}, {args.flood_delay_ms} ms between requests on each "
          f"connection, both on core 1) asks /api/v1/sites/demo/counters?page=<a new page each "
          f"request> from {args.flood_clients} addresses; medians of {args.rounds} alternating "
          f"rounds. µs/beacon = the server's CPU over the run / beacons, the flood's cost "
          f"included; ratio = baseline / luot.\n")
    print("| run | baseline µs/beacon | luot µs/beacon | **CPU ratio** | beacons/s base / luot "
          "| flood reads/s base / luot | luot's flood non-2xx | µs/request (all) base / luot |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    b, l = results["quiet"]["base"], results["quiet"]["luot"]
    print(f"| plain (`POST /hit?quiet=1`) | {med(b, 'cpu_us'):.2f} | {med(l, 'cpu_us'):.2f} | "
          f"**{med(b, 'cpu_us') / med(l, 'cpu_us'):.2f}** | "
          f"{med(b, 'rps'):,.0f} / {med(l, 'rps'):,.0f} | – | – | – |")
    b, l = flood["base"], flood["luot"]
    fb = [r["flood"] for r in b]
    fl = [r["flood"] for r in l]
    non2xx = sum(f["non2xx"] for f in fl)
    asked = sum(f["requests"] for f in fl)
    print(f"| read flood | {med(b, 'cpu_beacon_us'):.2f} | {med(l, 'cpu_beacon_us'):.2f} | "
          f"**{med(b, 'cpu_beacon_us') / med(l, 'cpu_beacon_us'):.2f}** | "
          f"{med(b, 'rps'):,.0f} / {med(l, 'rps'):,.0f} | "
          f"{med(fb, 'rps'):,.0f} / {med(fl, 'rps'):,.0f} | "
          f"{non2xx / max(asked, 1):.0%} of {asked:,} | "
          f"{med(b, 'cpu_all_us'):.2f} / {med(l, 'cpu_all_us'):.2f} |")
    reads = flood["store_reads"]
    print("\nluot's store reads during its flood rounds (luot_store_reads_total): "
          + ("not in this build" if reads is None else f"{reads:,.0f}"))
    print()


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
    ap.add_argument("--skip-flood", action="store_true", help="no read-flood run")
    ap.add_argument("--flood-connections", type=int, default=8,
                    help="connections of the read-flood wrk")
    ap.add_argument("--flood-delay-ms", type=int, default=1,
                    help="ms each flood connection waits before each request (bounds the "
                         "flood's rate alike for both servers; 0 = full speed)")
    ap.add_argument("--flood-clients", type=int, default=10,
                    help="client addresses the flood comes from")
    ap.add_argument("--paced-ms", type=int, default=0,
                    help="also run each route with every connection waiting this many ms "
                         "before each request (latency below saturation); 0 = off")
    ap.add_argument("--redis-nice", type=int, default=10,
                    help="nice value of redis-server on the servers' core, as deploy/README.md "
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
            ok &= run_store(args, tmp, store, (baseline_port, baseline.p.pid))
        if not args.skip_memory:
            memory_phase(args, tmp)
    finally:
        baseline.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
