#!/usr/bin/env python3
"""Soak: luot (release) on the Redis store under a steady mixed load, with
Redis SIGKILLed and restarted every two minutes, for a bounded time.

    python3 benches/soak.py                 # 10 minutes
    python3 benches/soak.py --minutes 3     # what RELIABILITY.md records

Load: wrk with benches/wrk/luot.lua, in back-to-back windows of --sample
seconds (default 10). In each window one wrk sends beacons (the mode cycles
through quiet POST, answered POST and the GIF pixel; pages, visitors, browser
User-Agents and X-Forwarded-For clients vary per request) and a second wrk
reads the site's figures. Each window ends with LUOT_BENCH_CUTOFF, so for its
last second only GET /healthz is sent: no beacon is ever in flight when a wrk
stops, and the 2xx beacons of all windows add up exactly.

Redis runs with appendonly yes / appendfsync always and is SIGKILLed and
restarted on the same port and directory every --restart-every seconds
(default 120), in the middle of a window, while the load runs.

Every window prints and records: beacons/s, the beacon and read p99, the
non-2xx and socket errors, luot's RSS, whether Redis was up. At the end it
waits for luot to flush everything and reconciles: the site total must equal
the 2xx beacons answered, exactly. Exit status 0 only when it does and no
request failed.

Only loopback is used; every wait is bounded; luot and Redis are stopped on
exit.
"""

import argparse
import json
import os
import shutil
import signal
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
BROWSER_SITE = "demo"


# Shared with the load script, which lives beside this one.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import cores, free_port, wait_port  # noqa: E402


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def metric(admin_port, series):
    text = get(f"http://127.0.0.1:{admin_port}/metrics")
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def site_total(port):
    body = get(f"http://127.0.0.1:{port}/api/v1/sites/{BROWSER_SITE}/counters")
    return json.loads(body)["total"]


def pin(core, argv):
    return ["taskset", "-c", str(core)] + argv if cores() >= 2 and shutil.which("taskset") else argv


class Redis:
    """A redis-server with an AOF fsynced on every write; kill and restart
    keep the port and the directory."""

    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "redis")
        os.makedirs(self.dir)
        self.port = free_port()
        self.proc = None
        self.log = open(os.path.join(tmp, "redis.log"), "a")
        self.start()

    def start(self):
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "yes", "--appendfsync", "always",
                "--dir", self.dir]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log)
        end = time.time() + 30
        while time.time() < end:
            r = subprocess.run(["redis-cli", "-p", str(self.port), "PING"],
                               capture_output=True, text=True, timeout=5)
            if r.stdout.strip() == "PONG":
                return
            time.sleep(0.1)
        raise RuntimeError("redis-server did not answer PING in 30 s")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def restart(self):
        self.kill()
        self.start()

    def up(self):
        return self.proc is not None and self.proc.poll() is None


def wrk(port, mode, seconds, connections, cutoff, core):
    env = dict(os.environ, LUOT_BENCH_MODE=mode, LUOT_BENCH_SITE=BROWSER_SITE,
               LUOT_BENCH_CUTOFF=str(cutoff))
    argv = pin(core, ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                      "-s", LUA, f"http://127.0.0.1:{port}"])
    out = subprocess.run(argv, env=env, capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no RESULT line:\n{out}")
    r = {k: int(v) for k, v in (kv.split("=") for kv in line.split()[1:])}
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["timeout"]
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10, help="how long to load (default 10, at most 120)")
    ap.add_argument("--sample", type=int, default=10, help="seconds per load window and sample")
    ap.add_argument("--restart-every", type=int, default=120, help="seconds between Redis restarts")
    ap.add_argument("--connections", type=int, default=16, help="wrk connections for beacons")
    ap.add_argument("--flush-interval", default="1s", help="LUOT_FLUSH_INTERVAL")
    ap.add_argument("--no-build", action="store_true", help="use target/release/luot as it is")
    args = ap.parse_args()
    if not 0 < args.minutes <= 120:
        sys.exit("--minutes must be in (0, 120]")
    if args.sample < 3:
        sys.exit("--sample must be at least 3 seconds")
    for tool in ("wrk", "redis-server", "redis-cli"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing (apt-get install wrk redis-server redis-tools)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "luot"], cwd=ROOT, check=True)
    binary = os.path.join(TARGET, "release", "luot")

    tmp = tempfile.mkdtemp(prefix="luot-soak-")
    redis = Redis(tmp)
    port, admin = free_port(), free_port()
    data = os.path.join(tmp, "data")
    env = dict(os.environ, LUOT_LISTEN=f"127.0.0.1:{port}", LUOT_ADMIN_LISTEN=f"127.0.0.1:{admin}",
               LUOT_DATA_DIR=data, LUOT_TRUSTED_PROXIES="127.0.0.1",
               LUOT_REDIS_URL=f"redis://127.0.0.1:{redis.port}/",
               LUOT_FLUSH_INTERVAL=args.flush_interval, RUST_LOG="warn")
    env.pop("LUOT_CONFIG", None)
    luot_log = open(os.path.join(tmp, "luot.log"), "w")
    luot = subprocess.Popen(pin(0, [binary, "serve"]), env=env, stdout=luot_log, stderr=luot_log)
    stop = threading.Event()
    restarts = []

    def restarter(t0):
        n = 1
        while not stop.wait(max(0.0, t0 + n * args.restart_every - time.time())):
            at = time.time() - t0
            redis.kill()
            time.sleep(0.5)  # an outage luot notices, short enough to keep the windows busy
            try:
                redis.restart()
                restarts.append((at, time.time() - t0))
                print(f"  [{at:6.1f}s] Redis SIGKILLed and restarted (up again at {time.time() - t0:.1f}s)", flush=True)
            except RuntimeError as e:
                print(f"  Redis restart failed: {e}", flush=True)
            n += 1

    rows = []
    ok = True
    try:
        wait_port(port)
        base_total = site_total(port)
        rss_start = rss_kib(luot.pid)
        windows = max(1, int(args.minutes * 60 // args.sample))
        modes = ["quiet", "answer", "gif"]
        print(f"soak: luot {binary} (pid {luot.pid}), Redis on {redis.port} (AOF always), "
              f"{windows} windows of {args.sample}s, Redis restart every {args.restart_every}s, "
              f"flush {args.flush_interval}, work dir {tmp}", flush=True)
        print(f"{'t(s)':>6} {'mode':>6} {'beacons/s':>9} {'p99 beacon':>10} {'p99 read':>9} "
              f"{'non2xx':>6} {'errors':>6} {'RSS MiB':>8} {'redis':>5}", flush=True)
        t0 = time.time()
        threading.Thread(target=restarter, args=(t0,), daemon=True).start()
        answered = 0
        for w in range(windows):
            mode = modes[w % len(modes)]
            reads = {}

            def reader():
                reads.update(wrk(port, "counters", args.sample, 2, args.sample - 1, 1))

            rt = threading.Thread(target=reader)
            rt.start()
            r = wrk(port, mode, args.sample, args.connections, args.sample - 1, 1)
            rt.join(timeout=args.sample + 90)
            beacons_ok = r["beacons"] - r["non2xx"] - r["errors"]
            answered += beacons_ok
            row = dict(t=round(time.time() - t0, 1), mode=mode,
                       beacons_per_s=round(beacons_ok / (args.sample - 1)),
                       p99_beacon_ms=r["p99_us"] / 1000, p99_read_ms=reads.get("p99_us", 0) / 1000,
                       non2xx=r["non2xx"] + reads.get("non2xx", 0),
                       errors=r["errors"] + reads.get("errors", 0),
                       rss_mib=round(rss_kib(luot.pid) / 1024, 1), redis_up=redis.up())
            rows.append(row)
            print(f"{row['t']:>6} {mode:>6} {row['beacons_per_s']:>9} {row['p99_beacon_ms']:>9.1f}m "
                  f"{row['p99_read_ms']:>8.1f}m {row['non2xx']:>6} {row['errors']:>6} "
                  f"{row['rss_mib']:>8} {'up' if row['redis_up'] else 'DOWN':>5}", flush=True)
            if luot.poll() is not None:
                print("luot exited!", flush=True)
                ok = False
                break
        stop.set()
        # Reconcile: Redis up, nothing pending, the total stops moving.
        if not redis.up():
            redis.restart()
        end = time.time() + 120
        counted, last, steady = None, None, 0
        while time.time() < end:
            pending = metric(admin, "luot_pending_keys")
            up = metric(admin, "luot_store_up")
            counted = site_total(port) - base_total
            steady = steady + 1 if (counted == last and pending == 0 and up == 1) else 0
            if steady >= 3:
                break
            last = counted
            time.sleep(1)
        rss_end = rss_kib(luot.pid)
        errors = sum(r["errors"] + r["non2xx"] for r in rows)
        p99s = sorted(r["p99_beacon_ms"] for r in rows)
        rsss = [r["rss_mib"] for r in rows]
        exact = counted == answered
        ok = ok and exact and errors == 0
        print()
        print(f"duration: {time.time() - t0:.0f} s, {len(rows)} windows, {len(restarts)} Redis restarts")
        print(f"beacons answered 2xx: {answered}; counted by luot: {counted} -> "
              f"{'EXACT' if exact else 'MISMATCH (' + str(counted - answered) + ')'}")
        print(f"failed requests (non-2xx + socket errors): {errors}")
        print(f"beacon p99 per window: median {p99s[len(p99s) // 2]:.1f} ms, worst {p99s[-1]:.1f} ms")
        print(f"luot RSS: start {rss_start / 1024:.1f} MiB, min {min(rsss)} MiB, max {max(rsss)} MiB, "
              f"end {rss_end / 1024:.1f} MiB")
        wal = os.path.join(data, "luot.wal")
        print(f"write-ahead file at the end: {os.path.getsize(wal) if os.path.exists(wal) else 0} bytes")
        print(f"result: {'PASS' if ok else 'FAIL'}")
    finally:
        stop.set()
        if luot.poll() is None:
            luot.send_signal(signal.SIGTERM)
            try:
                luot.wait(timeout=30)
            except subprocess.TimeoutExpired:
                luot.kill()
        redis.kill()
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"logs kept in {tmp}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
