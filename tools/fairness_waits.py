#!/usr/bin/env python3
"""Where the fairness workload's longest wait comes from: every `acquire()` wait, on CPython's `_thread` and zthread.

    .venv/bin/python tools/fairness_waits.py [--seconds 1] [--runs 3] [--stalls] [--json]

Runs the fairness workload of `python -m zthread bench --apps` (4 threads taking one `threading.Lock` for short
critical sections) in a fresh interpreter per run and side, the sides alternating, and prints for each run the
acquisitions per second, the longest wait, and how many waits fell in each power-of-two bucket from 0.5 us up.
Waits that begin in the warm-up (the first 50 ms, at most a quarter of the run) are left out, as the bench leaves
them out (the same code starts and stops the threads: `zthread._apps.run_threads_for`).

`--stalls` first measures the host: two processes read the clock in a loop for `--seconds`, one per CPU, and
report each gap over 0.2 ms. On a VM such a gap is a time the host stopped a busy CPU, and a fairness wait that a
gap lands in lasts the gap and more: the longest waits of both sides are such waits (docs/DESIGN.md, "The
fairness mark per CPython").

Run it with an interpreter that has zthread installed (the README's `.venv`, say), with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

# The child imports zthread before `threading`: nothing imported here may import `threading` (subprocess and
# multiprocessing do, so the parent imports them where it uses them).

THREADS = 4
SMALLEST_BUCKET = 10  # 2**9 ns = 0.5 us: everything below is one bucket, a lock taken without waiting


def child(side: str, seconds: float) -> dict[str, Any]:
    """One run of the workload in this (fresh) interpreter; `side` is "zthread" or "CPython"."""
    from zthread import _apps

    threading = _apps.threading_on(side)
    now = time.perf_counter_ns
    lock = threading.Lock()
    stop = [False]
    warm = [0]
    go = threading.Event()
    counts = [0] * THREADS
    hists = [[0] * 64 for _ in range(THREADS)]
    longest = [0] * THREADS

    def worker(i: int) -> None:
        acquire, release = lock.acquire, lock.release
        hist = hists[i]
        count = worst = 0
        go.wait(_apps.WAIT_S)
        while not stop[0]:
            t0 = now()
            acquire()
            waited = now() - t0
            release()
            count += 1
            if t0 >= warm[0]:
                hist[waited.bit_length()] += 1
                if waited > worst:
                    worst = waited
        counts[i], longest[i] = count, worst

    elapsed_s = _apps.run_threads_for(threading, worker, THREADS, seconds, go, stop, warm)
    merged = [sum(h[b] for h in hists) for b in range(64)]
    below = sum(merged[:SMALLEST_BUCKET])
    buckets = {f"<{2 ** (SMALLEST_BUCKET - 1) / 1e3:g}us": below}
    for b in range(SMALLEST_BUCKET, 64):
        if merged[b]:
            buckets[f"{2 ** (b - 1) / 1e3:g}-{2 ** b / 1e3:g}us"] = merged[b]
    return {"side": side, "rate_per_s": sum(counts) / elapsed_s, "longest_ms": max(longest) / 1e6,
            "counts": counts, "buckets": buckets}


def clock_gaps(seconds: float, out: Any) -> None:
    """Reads the clock in a loop for `seconds`; sends every gap over 0.2 ms (ns) to `out`."""
    now = time.perf_counter_ns
    end = now() + int(seconds * 1e9)
    last = now()
    gaps = []
    while last < end:
        t = now()
        if t - last > 200_000:
            gaps.append(t - last)
        last = t
    out.send(gaps)


def stalls(seconds: float) -> list[int]:
    """Every clock gap over 0.2 ms seen by two processes at once, longest last."""
    import multiprocessing
    pipes = [multiprocessing.Pipe(duplex=False) for _ in range(2)]
    procs = [multiprocessing.Process(target=clock_gaps, args=(seconds, w)) for _, w in pipes]
    for p in procs:
        p.start()
    gaps = [g for r, _ in pipes for g in r.recv()]
    for p in procs:
        p.join()
    return sorted(gaps)


def run_child(side: str, seconds: float) -> dict[str, Any]:
    import subprocess
    out = subprocess.run([sys.executable, "-I", __file__, "--child", side, "--seconds", str(seconds)],
                         check=True, capture_output=True, text=True, timeout=60 + 2 * seconds)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="each run's length (default 1)")
    parser.add_argument("--runs", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--stalls", action="store_true", help="first measure the host's clock gaps")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of text")
    parser.add_argument("--child", choices=["zthread", "CPython"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seconds <= 0 or args.runs < 1:
        parser.error("--seconds must be positive and --runs at least 1")
    if args.child:
        print(json.dumps(child(args.child, args.seconds)))
        return 0
    doc: dict[str, Any] = {"python": sys.version.split()[0], "runs": []}
    if args.stalls:
        gaps = stalls(args.seconds)
        doc["host_gaps_ns"] = gaps
        if not args.json:
            longest = ", ".join(f"{g / 1e6:.2f}" for g in gaps[-8:]) or "none"
            print(f"host: {len(gaps)} clock gaps over 0.2 ms in {args.seconds:g} s (two processes); longest: {longest} ms")
    for i in range(args.runs):
        for side in ("CPython", "zthread")[::1 if i % 2 == 0 else -1]:  # which side goes first alternates
            r = run_child(side, args.seconds)
            doc["runs"].append(r)
            if not args.json:
                hist = "  ".join(f"{k} {v}" for k, v in r["buckets"].items())
                print(f"{side:8} {r['rate_per_s'] / 1e6:5.2f} M/s  longest {r['longest_ms']:5.2f} ms  waits: {hist}",
                      flush=True)
    if args.json:
        print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
