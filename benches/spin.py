#!/usr/bin/env python3
"""What luot's two extra costs do to the baseline's p99, each alone and together.

    python3 benches/spin.py                         # 5 rounds, spins 500,1000,1500 ns, 39 ms lumps
    python3 benches/spin.py --rounds 3 --spins 1000,2000 --lump-ms 0 --no-luot

luot differs from the bare baseline in two ways that matter to latency: a
cost every request pays (counting) and work that arrives in lumps (a flush
once a second on the same core). This starts the bare baseline, the same
baseline spinning N ns of CPU per request (BASELINE_SPIN_NS,
benches/baseline.rs) for each N, the baseline with flush-like lumps
(BASELINE_LUMP_MS: that much CPU a second on a thread at the flusher's
priority, paced by the flusher's own pace(); 39 ms is what luot's flush
costs at 10,000 pages a second on the embedded store), the baseline with
lumps and each spin, and luot twice (embedded store, the load script's
settings): with its default 1 s flush and with flushes 60 s apart. Each is
driven with the load script's quiet route (wrk -t1 -c64,
benches/wrk/luot.lua), servers on core 0 and wrk on core 1, the order
reversed every round. Prints medians: requests/s, p50, p99, the p99
against the bare baseline's, and the server's CPU per request.

Only loopback is targeted; every wrk run is bounded by --duration.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile

import load


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--spins", default="500,1000,1500",
                    help="nanoseconds of CPU each spinning baseline adds per request")
    ap.add_argument("--lump-ms", type=int, default=39,
                    help="milliseconds of CPU a second in lumps (0: no baselines with lumps)")
    ap.add_argument("--no-luot", action="store_true", help="baselines only")
    ap.add_argument("--skip-build", action="store_true")
    args = ap.parse_args()

    load.need("wrk", "wrk")
    load.need("taskset", "util-linux")
    if not args.skip_build:
        subprocess.run(["cargo", "build", "--release", "--bin", "luot", "--example", "baseline"],
                       cwd=load.ROOT, check=True)
    spins = [int(s) for s in args.spins.split(",") if s.strip()]
    tmp = tempfile.mkdtemp(prefix="luot-spin-")
    servers = {}
    try:
        variants = [(ns, 0) for ns in [0] + spins]
        if args.lump_ms > 0:
            variants += [(ns, args.lump_ms) for ns in [0] + spins]
        for ns, lump in variants:
            port = load.free_port()
            env = dict(os.environ, BASELINE_SPIN_NS=str(ns), BASELINE_LUMP_MS=str(lump))
            proc = load.Proc(load.pin(0, [os.path.join(load.TARGET, "release", "examples",
                                                       "baseline"), f"127.0.0.1:{port}"]), env=env)
            load.wait_port(port)
            name = "baseline" + (f" + {lump} ms lumps" if lump else "") + (f" + {ns} ns" if ns else "")
            servers[name] = (proc, port)
        if not args.no_luot:
            servers["luot, 1 s flush"] = load.start_luot(tmp, "embedded", None)
            servers["luot, 60 s flush"] = load.start_luot(
                tmp, "embedded", None, '[server]\nflush_interval = "60s"\n')
        for proc, port in servers.values():
            load.wrk(port, "quiet", 2, 64)  # warm-up, not measured
        results = {name: [] for name in servers}
        for rnd in range(args.rounds):
            order = list(servers) if rnd % 2 == 0 else list(reversed(servers))
            for name in order:
                proc, port = servers[name]
                r = load.wrk(port, "quiet", args.duration, 64, server=proc.p.pid)
                results[name].append(r)
                print(f"round {rnd + 1} {name:32} {load.describe(r)}", flush=True)
        base_p99 = statistics.median(r["p99_us"] for r in results["baseline"])
        print()
        print("| server | requests/s | p50 | p99 | p99 / baseline's | CPU per request |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, rs in results.items():
            med = lambda key: statistics.median(r[key] for r in rs)
            print(f"| {name} | {med('rps'):,.0f} | {med('p50_us'):.0f} µs | {med('p99_us'):.0f} µs "
                  f"| {med('p99_us') / base_p99:.2f} | {med('cpu_us'):.2f} µs |")
    finally:
        for proc, _ in servers.values():
            proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
