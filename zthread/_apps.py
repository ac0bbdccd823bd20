"""``python -m zthread bench --apps``: threading workloads on CPython's ``_thread`` and on zthread.

Each workload runs in a fresh interpreter per round and side: the zthread side calls ``zthread.install()``
before it imports ``threading``, so ``threading``, ``queue`` and ``concurrent.futures`` run on zthread; the
CPython side imports them as they are. Rounds alternate between the sides, and so does which goes first (A B,
B A, ...: ``_bench.round_order``); each metric is the median of its rounds per side, with the ratio
zthread / CPython. This module imports nothing of ``threading`` itself: only the children do.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

now = time.perf_counter_ns
WAIT_S = 30.0  # every wait is bounded: a bug fails the run, it does not hang it


def queue_pingpong(threading: ModuleType, queue: ModuleType, n: int) -> dict[str, float]:
    """Two threads pass an item back and forth through two queue.Queue; ns per round trip."""
    rounds = max(n // 10, 100)
    there, back = queue.Queue(), queue.Queue()

    def partner() -> None:
        for _ in range(rounds):
            back.put(there.get(timeout=WAIT_S))

    t = threading.Thread(target=partner)
    t.start()
    t0 = now()
    for i in range(rounds):
        there.put(i)
        back.get(timeout=WAIT_S)
    elapsed = now() - t0
    t.join(WAIT_S)
    return {"queue_pingpong": elapsed / rounds}


def queue_stream(threading: ModuleType, queue: ModuleType, n: int) -> dict[str, float]:
    """One producer, one consumer, queue.Queue(maxsize=64); ns per item."""
    items = max(n // 2, 1000)
    q = queue.Queue(maxsize=64)

    def producer() -> None:
        put = q.put
        for i in range(items):
            put(i, timeout=WAIT_S)

    t = threading.Thread(target=producer)
    t0 = now()
    t.start()
    get = q.get
    for _ in range(items):
        get(timeout=WAIT_S)
    elapsed = now() - t0
    t.join(WAIT_S)
    return {"queue_stream": elapsed / items}


def cond_pingpong(threading: ModuleType, queue: ModuleType, n: int) -> dict[str, float]:
    """Two threads take turns through one threading.Condition; ns per round trip."""
    rounds = max(n // 10, 100)
    cond = threading.Condition()
    turn = [0]

    def partner() -> None:
        with cond:
            for _ in range(rounds):
                while turn[0] != 1:
                    if not cond.wait(WAIT_S):
                        return
                turn[0] = 0
                cond.notify()

    t = threading.Thread(target=partner)
    t.start()
    t0 = now()
    with cond:
        for _ in range(rounds):
            turn[0] = 1
            cond.notify()
            while turn[0] != 0:
                if not cond.wait(WAIT_S):
                    raise RuntimeError("cond_pingpong: partner stalled")
    elapsed = now() - t0
    t.join(WAIT_S)
    return {"cond_pingpong": elapsed / rounds}


def event_pingpong(threading: ModuleType, queue: ModuleType, n: int) -> dict[str, float]:
    """Two threads signal each other through two threading.Event; ns per round trip."""
    rounds = max(n // 10, 100)
    ping, pong = threading.Event(), threading.Event()

    def partner() -> None:
        for _ in range(rounds):
            if not ping.wait(WAIT_S):
                return
            ping.clear()
            pong.set()

    t = threading.Thread(target=partner)
    t.start()
    t0 = now()
    for _ in range(rounds):
        ping.set()
        if not pong.wait(WAIT_S):
            raise RuntimeError("event_pingpong: partner stalled")
        pong.clear()
    elapsed = now() - t0
    t.join(WAIT_S)
    return {"event_pingpong": elapsed / rounds}


def pool_map(threading: ModuleType, queue: ModuleType, n: int) -> dict[str, float]:
    """ThreadPoolExecutor(4).map of a tiny function; ns per item (the pool started and warm)."""
    from concurrent.futures import ThreadPoolExecutor

    items = max(n // 4, 1000)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(abs, range(100)))  # start the workers
        t0 = now()
        total = sum(pool.map(abs, range(items)))
        elapsed = now() - t0
    assert total == items * (items - 1) // 2
    return {"pool_map": elapsed / items}


def thread_join(threading: ModuleType, queue: ModuleType, n: int) -> dict[str, float]:
    """threading.Thread(target=f).start() and .join() of a thread that returns at once; ns per thread."""
    count = max(n // 200, 100)

    def f() -> None:
        pass

    t0 = now()
    for _ in range(count):
        t = threading.Thread(target=f)
        t.start()
        t.join(WAIT_S)
    return {"thread_join": (now() - t0) / count}


def semaphore(threading: ModuleType, queue: ModuleType, n: int) -> dict[str, float]:
    """threading.BoundedSemaphore(): acquire()+release(), uncontended; ns per pair."""
    sem = threading.BoundedSemaphore()
    a, r = sem.acquire, sem.release
    t0 = now()
    for _ in range(n):
        a(); r(); a(); r()  # noqa: E702
    return {"semaphore": (now() - t0) / (2 * n)}


def rlock_with(threading: ModuleType, queue: ModuleType, n: int) -> dict[str, float]:
    """threading.RLock(): `with r: with r: pass`; ns per outer with."""
    r = threading.RLock()
    t0 = now()
    for _ in range(n):
        with r:
            with r:
                pass
        with r:
            with r:
                pass
    return {"rlock_with": (now() - t0) / (2 * n)}


def fairness(threading: ModuleType, queue: ModuleType, n: int) -> dict[str, float]:
    """4 threads, one threading.Lock, short critical sections, for a fixed time: the longest single
    acquire() wait, the acquisitions per second, and the spread (most / fewest acquisitions of a thread)."""
    return {k: v for k, v in fairness_counts(threading, max(n / 100_000, 0.05)).items() if k.startswith("fair_")}


WARM_UP_NS = 50_000_000


def fairness_counts(threading: ModuleType, duration_s: float, thread_count: int = 4) -> dict[str, Any]:
    """The fairness workload for `duration_s` seconds; also each thread's count and longest wait (ns).
    Waits that begin in the first 50 ms are not counted in the longest (the threads leave `go.wait()` one
    by one through the GIL then: that start measures the GIL, the same on both sides, not the lock)."""
    lock = threading.Lock()
    stop = [False]
    warm = [0]
    go = threading.Event()
    counts = [0] * thread_count
    longest = [0] * thread_count
    shared = [0]

    def worker(i: int) -> None:
        acquire, release = lock.acquire, lock.release
        count = worst = 0
        go.wait(WAIT_S)
        while not stop[0]:
            t0 = now()
            acquire()
            waited = now() - t0
            shared[0] += 1
            release()
            count += 1
            if waited > worst and t0 >= warm[0]:
                worst = waited
        counts[i], longest[i] = count, worst

    elapsed_s = run_threads_for(threading, worker, thread_count, duration_s, go, stop, warm)
    assert shared[0] == sum(counts)
    return {
        "fair_max_wait": max(longest) / 1e6,
        "fair_acq_rate": sum(counts) / elapsed_s,
        "fair_spread": max(counts) / max(min(counts), 1),
        "counts": counts,
        "longest_ns": longest,
    }


def run_threads_for(threading: ModuleType, worker: Callable[[int], None], thread_count: int, duration_s: float,
                    go: Any, stop: list[bool], warm: list[int]) -> float:
    """Runs `worker(i)` on `thread_count` threads, which wait for the event `go`, until `stop[0]` is set
    `duration_s` later, and joins them; sets `warm[0]` to the end of the warm-up (`WARM_UP_NS`, at most a quarter
    of the run) before it lets them go. Returns the seconds from `go` to the last join."""
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(thread_count)]
    for t in threads:
        t.start()
    t0 = now()
    warm[0] = t0 + min(WARM_UP_NS, int(duration_s * 1e9) // 4)
    go.set()
    time.sleep(duration_s)
    stop[0] = True
    for t in threads:
        t.join(WAIT_S)
    return (now() - t0) / 1e9


@dataclass(frozen=True)
class App:
    name: str  # the workload, one child process per round and side
    metrics: tuple[tuple[str, str, str], ...]  # (metric, unit, doc)
    run: Callable[[ModuleType, ModuleType, int], dict[str, float]]


APPS = [
    App("queue_pingpong", (("queue_pingpong", "ns", "queue.Queue ping-pong between 2 threads, per round trip"),),
        queue_pingpong),
    App("queue_stream", (("queue_stream", "ns", "queue.Queue(64), 1 producer and 1 consumer, per item"),),
        queue_stream),
    App("cond_pingpong", (("cond_pingpong", "ns", "Condition ping-pong between 2 threads, per round trip"),),
        cond_pingpong),
    App("event_pingpong", (("event_pingpong", "ns", "Event ping-pong between 2 threads, per round trip"),),
        event_pingpong),
    App("pool_map", (("pool_map", "ns", "ThreadPoolExecutor(4).map of a tiny function, per item"),), pool_map),
    App("thread_join", (("thread_join", "ns", "threading.Thread start() and join() of a thread that returns at once"),),
        thread_join),
    App("semaphore", (("semaphore", "ns", "BoundedSemaphore acquire()+release()"),), semaphore),
    App("rlock_with", (("rlock_with", "ns", "threading.RLock nested with"),), rlock_with),
    App("fairness", (
        ("fair_max_wait", "ms", "4 threads on one Lock: longest single acquire() wait"),
        ("fair_acq_rate", "/s", "4 threads on one Lock: acquisitions per second (higher is better)"),
        ("fair_spread", "x", "4 threads on one Lock: most / fewest acquisitions of a thread"),
    ), fairness),
]
METRIC_NAMES = [m[0] for app in APPS for m in app.metrics]


def threading_on(side: str) -> ModuleType:
    """In a fresh interpreter: `threading`, on zthread (`zthread.install()` first) if `side` is "zthread", else on
    CPython's `_thread`; checked, so that a wrong side fails instead of measuring the other one."""
    if side == "zthread":
        import zthread

        zthread.install()
    import threading

    import _thread

    from zthread import _zthread

    assert (_thread is _zthread) == (side == "zthread"), "the side's _thread is not the one threading uses"
    return threading


def run_app(side: str, name: str, scale: int) -> dict[str, float]:
    """In a fresh interpreter: workload `name` with `threading` on `side`'s `_thread` (tools/instructions.py too)."""
    threading = threading_on(side)
    import queue

    app = next(a for a in APPS if a.name == name)
    return app.run(threading, queue, scale)


def child() -> None:
    """In the fresh interpreter: argv = [side, workload, scale]; prints the workload's metrics as JSON."""
    print(json.dumps(run_app(sys.argv[1], sys.argv[2], int(sys.argv[3]))))


CHILD = "import sys; sys.path.insert(0, sys.argv.pop(1)); from zthread._apps import child; child()"


def run_child(side: str, app: App, scale: int) -> dict[str, float]:
    import subprocess  # here, not at the top: subprocess imports threading, which the child must not have yet

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-I", "-c", CHILD, package_parent, side, app.name, str(scale)],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"bench --apps: {app.name} on {side} failed:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout)
    return result


def measure(apps: list[App], rounds: int, scale: int,
            progress: Callable[[str], None]) -> list[tuple[str, str, float, float, tuple[float, ...]]]:
    """(metric, unit, CPython median, zthread median, each round's zthread / CPython) for every metric of `apps`."""
    import statistics

    from zthread._bench import round_order, round_ratios

    results = []
    for app in apps:
        sides: dict[str, list[dict[str, float]]] = {"cpython": [], "zthread": []}
        for i in range(rounds):
            progress(f"{app.name}: round {i + 1}/{rounds}")
            for side in round_order(i):
                sides[side].append(run_child(side, app, scale))
        for metric, unit, _doc in app.metrics:
            cpython, zthread = [r[metric] for r in sides["cpython"]], [r[metric] for r in sides["zthread"]]
            results.append((metric, unit, statistics.median(cpython), statistics.median(zthread),
                            round_ratios(cpython, zthread)))
    return results
