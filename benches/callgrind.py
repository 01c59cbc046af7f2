#!/usr/bin/env python3
"""User-space instructions per request, counted by valgrind's callgrind.

The load script's figures move by several per cent between runs on a shared
machine; an instruction count does not. This starts a release build of luot
under callgrind (embedded store), sends beacons over one keep-alive
connection until pages, visitors and clients are known, zeroes the
counters, sends N more, and prints the instructions spent per request in
the connection tasks (hyper and luot, not the kernel), without the online
recounts, which run on a timer and so weigh more the slower callgrind
makes each request. It also prints the heaviest functions.

    python3 benches/callgrind.py                       # build, 3,000 answered beacons
    python3 benches/callgrind.py --mode quiet          # POST /hit?quiet=1
    python3 benches/callgrind.py --binary target/release/luot --requests 5000

Compare two builds with the same --requests: the counts repeat to within
about 1 % (background work on timers).
Needs valgrind (Debian package `valgrind`).
"""
import argparse
import glob
import http.client
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Where cargo puts the builds (cargo reads a relative CARGO_TARGET_DIR from
# the directory it runs in, ROOT here).
TARGET = os.path.join(ROOT, os.environ.get("CARGO_TARGET_DIR") or "target")
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 13; 2201117TG Build/TKQ1.221114.001; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/120.0.6099.144 Mobile Safari/537.36 Zalo android/12100562 ZaloTheme/light ZaloLanguage/vi",
]
# A newsroom's referrers (as benches/wrk/luot.lua), so every dimension's
# path runs: named sources, an app, internal, direct, an unknown host.
REFERRERS = [
    "android-app://com.google.android.googlequicksearchbox/", "https://www.google.com.vn/",
    "https://l.facebook.com/", "", "", "https://coccoc.com/search?query=x", "https://baomoi.com/",
    "http://localhost/", "https://vnexpress.net/",
]
# Client addresses in Vietnamese, Japanese and US blocks (only ever in
# X-Forwarded-For; the requests go to loopback).
BLOCKS = ["14.160", "113.160", "171.224", "1.52", "126.0", "8.34"]
# The connection task's future (http::server::Connections::spawn); rename
# it here when the server's code moves, or the script stops below.
CONN_TASK = "luot::http::server::Connections<H>::spawn::{{closure}}"
ONLINE = "luot::site::Site::online_now"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connect(port, deadline):
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", "/healthz")
            c.getresponse().read()
            return c
        except OSError:
            time.sleep(0.2)
    sys.exit("luot did not answer under callgrind within 120 s")


def send(c, mode, count, rng):
    """Sends `count` beacons like the load script's, over 300 pages, 2,000
    visitors, 1,440 client addresses, nine referrers, four User-Agents and
    a campaign on a tenth."""
    path = "/hit?quiet=1" if mode == "quiet" else "/hit"
    for i in range(count):
        page = f"/news/article-{rng.randint(1, 300)}"
        query = "?utm_source=newsletter&utm_medium=email&utm_campaign=sang" if i % 10 == 0 else ""
        body = json.dumps({"site": "demo", "page": "https://news.example" + page + query + "#top",
                           "ref": REFERRERS[i % len(REFERRERS)], "vid": f"v{rng.randint(1, 2000)}"})
        client = f"{BLOCKS[i % len(BLOCKS)]}.{rng.randint(0, 5)}.{rng.randint(1, 40)}"
        c.request("POST", path, body=body, headers={
            "Content-Type": "text/plain;charset=UTF-8",
            "User-Agent": AGENTS[i % len(AGENTS)],
            "X-Forwarded-For": client,
        })
        r = c.getresponse()
        r.read()
        if r.status >= 300:
            sys.exit(f"beacon answered {r.status}")


def inclusive(annotated, name):
    """The inclusive instruction count of the function `name` (the largest
    entry of that name: callgrind lists one per source file it spans)."""
    best = 0
    for line in annotated.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*?:(.*?)(?: \[.*\])?$", line)
        if m and m.group(2) == name:
            best = max(best, int(m.group(1).replace(",", "")))
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", help="a luot release binary (default: build one)")
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--mode", choices=["answer", "quiet"], default="answer")
    ap.add_argument("--top", type=int, default=25, help="functions to list")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing: apt-get install valgrind")
    binary = args.binary
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = os.path.join(TARGET, "release", "luot")

    tmp = tempfile.mkdtemp(prefix="luot-callgrind-")
    port, admin = free_port(), free_port()
    out = os.path.join(tmp, "callgrind.out")
    env = dict(os.environ, LUOT_LISTEN=f"127.0.0.1:{port}", LUOT_ADMIN_LISTEN=f"127.0.0.1:{admin}",
               LUOT_DATA_DIR=tmp, LUOT_TRUSTED_PROXIES="127.0.0.1", RUST_LOG="warn")
    env.pop("LUOT_REDIS_URL", None)
    proc = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "serve"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        rng = random.Random(7)
        c = connect(port, time.time() + 120)
        send(c, args.mode, 3000, rng)  # pages, visitors and clients now known
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
        send(c, args.mode, args.requests, rng)
        subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True)
        time.sleep(1)
    finally:
        proc.terminate()
        proc.wait()
    dumps = [f for f in glob.glob(out + ".*") if re.search(r"\.\d+$", f)]
    if not dumps:
        sys.exit("callgrind wrote no dump")
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--auto=no", "--threshold=100", max(dumps)],
                               capture_output=True, text=True, check=True).stdout
    conn, online = inclusive(annotated, CONN_TASK), inclusive(annotated, ONLINE)
    if conn == 0:
        sys.exit(f"no function named {CONN_TASK} in the profile: the server's code moved")
    n = args.requests
    print(f"{binary}: {args.mode}, {n} requests")
    print(f"instructions per request: {(conn - online) / n:,.0f} "
          f"(connection tasks {conn / n:,.0f}, online recounts {online / n:,.0f})")
    print("heaviest functions, inclusive, per request, on any thread (the flush's")
    print("too; the online recounts and the wrappers that hold them left out):")
    # Wrappers of the recounts count them too; without recounts, the
    # connection task is the ceiling.
    ceiling = online if online > conn // 10 else conn
    shown, seen = 0, set()
    for line in annotated.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*?:(.*?)(?: \[.*\])?$", line)
        if not m:
            continue
        count, name = int(m.group(1).replace(",", "")), m.group(2)
        if (count >= ceiling or name in seen or re.search(r"sketch|OnlineRing|online", name)
                or not re.search(r"luot::|hyper::|httparse|serde_json|http::header", name)):
            continue
        seen.add(name)
        print(f"  {count / n:8,.0f}  {name[:110]}")
        shown += 1
        if shown == args.top:
            break
    if not os.environ.get("LUOT_CALLGRIND_KEEP"):
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
