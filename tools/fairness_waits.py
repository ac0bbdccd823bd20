#!/usr/bin/env python3
"""Where the fairness workload's longest wait comes from: every `acquire()` wait, on CPython's `_thread` and zthread.

    .venv/bin/python tools/fairness_waits.py [--seconds 1] [--runs 3] [--stalls] [--explain K] [--json]

Runs the fairness workload of `python -m zthread bench --apps` (4 threads taking one `threading.Lock` for short
critical sections) in a fresh interpreter per run and side, the sides alternating, and prints for each run the
acquisitions per second, the longest wait, and how many waits fell in each power-of-two bucket from 0.5 us up.
Waits that begin in the warm-up (the first 50 ms, at most a quarter of the run) are left out, as the bench leaves
them out (the same code starts and stops the threads: `zthread._apps.run_threads_for`).

`--explain K` also tells, for the K longest waits of each run, what the other threads did meanwhile: how often
each took the lock, and the longest stretch in which no thread took it. A wait that lost the lock to the others
again and again (they took it thousands of times, never long apart) is the lock's fairness at work, or failing;
one that spans a stretch in which no thread took the lock at all is the process stalled: the thread that held the
lock or the GIL was not running (on a 2-CPU VM, a woken thread queued for a millisecond or more behind another on
one CPU while the other CPU idled: docs/SPEED-HISTORY.md, "An Intel Xeon host"). Each thread then also stores when
it took the lock, in an array made before the run (one more store an acquisition; up to `LOG_PER_THREAD_PER_S`).

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


LOG_PER_THREAD_PER_S = 4_000_000  # acquisitions a thread may log a second with --explain (8 bytes each)
EXPLAINED_FROM_NS = 100_000  # waits shorter than this are not candidates for --explain


def explain(acquired: list[list[int]], waits: list[tuple[int, int, int]], k: int) -> list[dict[str, Any]]:
    """For the `k` longest of `waits` ((thread, start ns, end ns), the ends being when the waiter had the lock):
    how many times each thread took the lock in between (`acquired[i]`: thread i's moments of taking it, sorted),
    and the longest stretch of the wait in which no thread took it (ns)."""
    import bisect

    explained = []
    for i, t0, t1 in sorted(waits, key=lambda w: w[2] - w[1], reverse=True)[:k]:
        others = [0] * len(acquired)
        moments = [t0, t1]
        for j, times in enumerate(acquired):
            inside = times[bisect.bisect_right(times, t0):bisect.bisect_left(times, t1)]
            others[j] = len(inside)
            moments.extend(inside)
        moments.sort()
        quiet = max(b - a for a, b in zip(moments, moments[1:]))
        explained.append({"thread": i, "wait_ns": t1 - t0, "others_took_it": others, "longest_quiet_ns": quiet})
    return explained


def child(side: str, seconds: float, explain_k: int = 0) -> dict[str, Any]:
    """One run of the workload in this (fresh) interpreter; `side` is "zthread" or "CPython". With `explain_k`,
    also `explain` for its `explain_k` longest waits."""
    from array import array

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
    room = int(LOG_PER_THREAD_PER_S * seconds) if explain_k else 0
    logs = [array("q", bytes(8 * room)) for _ in range(THREADS)]
    logged = [0] * THREADS
    long_waits: list[tuple[int, int, int]] = []

    def worker(i: int) -> None:
        acquire, release = lock.acquire, lock.release
        hist = hists[i]
        log, waits = logs[i], long_waits
        count = worst = 0
        go.wait(_apps.WAIT_S)
        while not stop[0]:
            t0 = now()
            acquire()
            t1 = now()
            release()
            waited = t1 - t0
            if count < room:
                log[count] = t1
            count += 1
            if t0 >= warm[0]:
                hist[waited.bit_length()] += 1
                if waited > worst:
                    worst = waited
                if room and waited >= EXPLAINED_FROM_NS:
                    waits.append((i, t0, t1))
        counts[i], longest[i], logged[i] = count, worst, min(count, room)

    elapsed_s = _apps.run_threads_for(threading, worker, THREADS, seconds, go, stop, warm)
    merged = [sum(h[b] for h in hists) for b in range(64)]
    below = sum(merged[:SMALLEST_BUCKET])
    buckets = {f"<{2 ** (SMALLEST_BUCKET - 1) / 1e3:g}us": below}
    for b in range(SMALLEST_BUCKET, 64):
        if merged[b]:
            buckets[f"{2 ** (b - 1) / 1e3:g}-{2 ** b / 1e3:g}us"] = merged[b]
    result = {"side": side, "rate_per_s": sum(counts) / elapsed_s, "longest_ms": max(longest) / 1e6,
              "counts": counts, "buckets": buckets}
    if explain_k:
        # Only the waits that end before every thread's log ran out can be explained in full.
        full_until = min(log[n - 1] if n == room else 2**63 - 1 for log, n in zip(logs, logged))
        result["explained"] = explain([log[:n].tolist() for log, n in zip(logs, logged)],
                                      [w for w in long_waits if w[2] <= full_until], explain_k)
    return result


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


def run_child(side: str, seconds: float, explain_k: int = 0) -> dict[str, Any]:
    import subprocess
    out = subprocess.run([sys.executable, "-I", __file__, "--child", side, "--seconds", str(seconds),
                          "--explain", str(explain_k)],
                         check=True, capture_output=True, text=True, timeout=60 + 2 * seconds)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="each run's length (default 1)")
    parser.add_argument("--runs", type=int, default=3, help="runs per side (default 3)")
    parser.add_argument("--stalls", action="store_true", help="first measure the host's clock gaps")
    parser.add_argument("--explain", type=int, default=0, metavar="K",
                        help="for each run's K longest waits: the others' acquisitions and the longest quiet stretch")
    parser.add_argument("--json", action="store_true", help="one JSON document instead of text")
    parser.add_argument("--child", choices=["zthread", "CPython"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seconds <= 0 or args.runs < 1 or args.explain < 0:
        parser.error("--seconds must be positive, --runs at least 1 and --explain not negative")
    if args.child:
        print(json.dumps(child(args.child, args.seconds, args.explain)))
        return 0
    doc: dict[str, Any] = {"python": sys.version.split()[0], "runs": []}
    if args.stalls:
        gaps = stalls(args.seconds)
        doc["host_gaps_ns"] = gaps
        if not args.json:
            longest = ", ".join(f"{g / 1e6:.2f}" for g in gaps[-8:]) or "none"
            print(f"host: {len(gaps)} clock gaps over 0.2 ms in {args.seconds:g} s (two processes); longest: {longest} ms")
    from zthread._bench import round_order  # which side goes first alternates, as in the bench

    for i in range(args.runs):
        for side in ("CPython" if name == "cpython" else "zthread" for name in round_order(i)):
            r = run_child(side, args.seconds, args.explain)
            doc["runs"].append(r)
            if not args.json:
                hist = "  ".join(f"{k} {v}" for k, v in r["buckets"].items())
                print(f"{side:8} {r['rate_per_s'] / 1e6:5.2f} M/s  longest {r['longest_ms']:5.2f} ms  waits: {hist}",
                      flush=True)
                for e in r.get("explained", []):
                    print(f"{'':8} wait {e['wait_ns'] / 1e6:5.2f} ms (thread {e['thread']}): the others took the lock "
                          f"{e['others_took_it']} times; longest stretch nobody took it {e['longest_quiet_ns'] / 1e6:.2f} ms")
    if args.json:
        print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
