"""``python -m zthread bench``: zthread against CPython's ``_thread``, side by side in one process.

Rounds alternate between the two sides, and so does which side goes first (A B, B A, A B, ...: whatever
going first or second does to a figure falls on both sides alike); each metric reports the median of its rounds per
side and the ratio zthread / CPython (below 1: zthread is faster). Each side runs its own copy of a metric's
code: CPython 3.11+ specializes every call site for the callables it meets, and a site shared by both sides
would keep the specialization of whichever side ran first (3.13+'s generic call never gives way), so each
side gets the call sites a program using only that module has. Nothing here imports ``threading``.
"""

from __future__ import annotations

import _thread
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FunctionType, ModuleType

import zthread._zthread as zt

Clock = Callable[[], int]
now: Clock = time.perf_counter_ns
WAIT_S = 30.0  # every wait in a benchmark is bounded: a bug fails, it does not hang


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    doc: str
    run: Callable[[ModuleType, int], float]  # (module, scale) -> value for one round
    both_sides: bool = True


def per_op(elapsed_ns: int, ops: int) -> float:
    return elapsed_ns / ops


def acq_rel(m: ModuleType, n: int) -> float:
    lock = m.allocate_lock()
    a, r = lock.acquire, lock.release
    t0 = now()
    for _ in range(n):
        a(); r(); a(); r(); a(); r(); a(); r(); a(); r()  # noqa: E702
    return per_op(now() - t0, 5 * n)


def with_block(m: ModuleType, n: int) -> float:
    lock = m.allocate_lock()
    t0 = now()
    for _ in range(n):
        with lock:
            pass
        with lock:
            pass
        with lock:
            pass
        with lock:
            pass
        with lock:
            pass
    return per_op(now() - t0, 5 * n)


def try_fail(m: ModuleType, n: int) -> float:
    lock = m.allocate_lock()
    lock.acquire()
    a = lock.acquire
    t0 = now()
    for _ in range(n):
        a(False); a(False); a(False); a(False); a(False)  # noqa: E702
    return per_op(now() - t0, 5 * n)


def timed_free(m: ModuleType, n: int) -> float:
    lock = m.allocate_lock()
    a, r = lock.acquire, lock.release
    t0 = now()
    for _ in range(n):
        a(True, 1.0); r(); a(True, 1.0); r(); a(True, 1.0); r(); a(True, 1.0); r(); a(True, 1.0); r()  # noqa: E702
    return per_op(now() - t0, 5 * n)


def locked(m: ModuleType, n: int) -> float:
    f = m.allocate_lock().locked
    t0 = now()
    for _ in range(n):
        f(); f(); f(); f(); f()  # noqa: E702
    return per_op(now() - t0, 5 * n)


def get_ident(m: ModuleType, n: int) -> float:
    f = m.get_ident
    t0 = now()
    for _ in range(n):
        f(); f(); f(); f(); f()  # noqa: E702
    return per_op(now() - t0, 5 * n)


def alloc(m: ModuleType, n: int) -> float:
    f = m.allocate_lock
    t0 = now()
    for _ in range(n):
        f(); f(); f(); f(); f()  # noqa: E702
    return per_op(now() - t0, 5 * n)


def floor(m: ModuleType, n: int) -> float:
    """Two calls of a trivial built-in C method: the cost of acquire()+release() with nothing inside."""
    f = [].clear
    t0 = now()
    for _ in range(n):
        f(); f(); f(); f(); f(); f(); f(); f(); f(); f()  # noqa: E702
    return per_op(now() - t0, 5 * n)


def handoff(m: ModuleType, n: int) -> float:
    """A baton passed between two threads through two locks; ns per round trip."""
    rounds = max(n // 20, 200)
    ping, pong, done = m.allocate_lock(), m.allocate_lock(), m.allocate_lock()
    ping.acquire(); pong.acquire(); done.acquire()  # noqa: E702

    def partner() -> None:
        for _ in range(rounds):
            if not ping.acquire(True, WAIT_S):
                break
            pong.release()
        done.release()

    m.start_new_thread(partner, ())
    t0 = now()
    for _ in range(rounds):
        ping.release()
        if not pong.acquire(True, WAIT_S):
            raise RuntimeError("handoff: partner thread stalled")
    elapsed = now() - t0
    done.acquire(True, WAIT_S)
    return per_op(elapsed, rounds)


def contended4(m: ModuleType, n: int) -> float:
    """4 threads doing `with lock: counter += 1`; ns per increment."""
    per_thread = max(n // 10, 500)
    lock = m.allocate_lock()
    finished = [m.allocate_lock() for _ in range(4)]
    counter = [0]

    def worker(done: object) -> None:
        for _ in range(per_thread):
            with lock:
                counter[0] += 1
        done.release()  # type: ignore[attr-defined]

    for f in finished:
        f.acquire()
    t0 = now()
    for f in finished:
        m.start_new_thread(worker, (f,))
    for f in finished:
        if not f.acquire(True, WAIT_S):
            raise RuntimeError("contended4: a worker stalled")
    elapsed = now() - t0
    assert counter[0] == 4 * per_thread
    return per_op(elapsed, 4 * per_thread)


def spawn(m: ModuleType, n: int) -> float:
    """start_new_thread until the new thread has run; ns per thread."""
    count = max(n // 500, 20)
    ran = m.allocate_lock()
    ran.acquire()
    t0 = now()
    for _ in range(count):
        m.start_new_thread(ran.release, ())
        if not ran.acquire(True, WAIT_S):
            raise RuntimeError("spawn: the thread did not run")
    elapsed = now() - t0
    while m._count():  # let the threads finish before the next round
        time.sleep(0.001)
    return per_op(elapsed, count)


def overshoot_us(m: ModuleType, n: int) -> float:
    """How late acquire(timeout=2 ms) returns on a held lock, in microseconds (median of a few)."""
    lock = m.allocate_lock()
    lock.acquire()
    lateness = []
    for _ in range(max(n // 5000, 5)):
        t0 = now()
        lock.acquire(True, 0.002)
        lateness.append((now() - t0 - 2_000_000) / 1000)
    return statistics.median(lateness)


MEM_CODE = """
import sys, gc
m = __import__(sys.argv[1], fromlist=['x'])
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096
n = 200_000
gc.collect(); before = rss()
locks = [m.allocate_lock() for _ in range(n)]
after = rss()
print((after - before) / n - 8)  # minus the list's own pointer per lock
"""


def mem_per_lock(m: ModuleType, n: int) -> float:
    """Bytes per live lock (RSS growth over 200,000 locks), each side in a fresh subprocess."""
    if not os.path.exists("/proc/self/statm"):
        return float("nan")
    import subprocess  # here, not at the top: subprocess imports threading
    name = "_thread" if m is _thread else "zthread._zthread"
    out = subprocess.run([sys.executable, "-I", "-c", MEM_CODE, name], capture_output=True, text=True, check=True)
    return float(out.stdout)


METRICS = [
    Metric("acq_rel", "ns", "uncontended acquire()+release()", acq_rel),
    Metric("with", "ns", "with lock: pass", with_block),
    Metric("try_fail", "ns", "acquire(False) on a held lock", try_fail),
    Metric("timed_free", "ns", "acquire(True, 1.0)+release()", timed_free),
    Metric("locked", "ns", "locked()", locked),
    Metric("get_ident", "ns", "get_ident()", get_ident),
    Metric("alloc", "ns", "allocate_lock()", alloc),
    Metric("handoff", "ns", "baton between two threads through two locks, per round trip", handoff),
    Metric("contended4", "ns", "4 threads doing with lock: n += 1, per increment", contended4),
    Metric("spawn", "ns", "start_new_thread until the thread has run", spawn),
    Metric("overshoot_us", "us", "lateness of acquire(timeout=2 ms) on a held lock", overshoot_us),
    Metric("mem_per_lock", "B", "bytes per live lock (fresh subprocess per side)", mem_per_lock),
    Metric("floor", "ns", "two calls of a trivial built-in C method (reference)", floor, both_sides=False),
]


@dataclass
class Result:
    metric: str
    unit: str
    cpython: float
    zthread: float
    # Each round's own ratio: zthread's figure over the CPython figure of the same round (the sides alternate, so
    # a round's two figures are measured within seconds of each other, whatever the host did in between rounds).
    round_ratios: tuple[float, ...] = ()

    @property
    def ratio(self) -> float:
        return self.zthread / self.cpython if self.cpython else float("nan")

    def ratio_quartiles(self) -> tuple[float, float] | None:
        """The first and third quartiles of the rounds' own ratios: the middle half of what one round said.
        None with fewer than two rounds (or a metric measured on one side only)."""
        if len(self.round_ratios) < 2:
            return None
        q1, _, q3 = statistics.quantiles(self.round_ratios, n=4, method="inclusive")
        return q1, q3


SIDES = ("cpython", "zthread")


def round_order(i: int) -> tuple[str, str]:
    """The sides in the order round `i` (from 0) runs them: CPython first in even rounds, zthread first in odd ones,
    so neither side always runs right after the other (a figure can depend on what ran just before it: the other
    side's threads still exiting, its memory, a CPU it left hot or cold)."""
    return SIDES if i % 2 == 0 else SIDES[::-1]


def round_ratios(cpython: list[float], zthread: list[float]) -> tuple[float, ...]:
    """Round by round, zthread's figure over CPython's (rounds whose CPython figure is not positive left out)."""
    return tuple(z / c for c, z in zip(cpython, zthread) if c > 0)


def own_copy(fn: Callable[[ModuleType, int], float]) -> Callable[[ModuleType, int], float]:
    """`fn` with a code object of its own, so its call sites are specialized for one side only."""
    assert isinstance(fn, FunctionType)
    copy: Callable[[ModuleType, int], float] = FunctionType(
        fn.__code__.replace(), fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    return copy


def measure(metric: Metric, rounds: int, scale: int, progress: Callable[[str], None]) -> Result:
    sides: dict[str, list[float]] = {"cpython": [], "zthread": []}
    rounds = 3 if metric.name in ("mem_per_lock",) and rounds > 3 else rounds
    run_cpython, run_zthread = own_copy(metric.run), own_copy(metric.run)
    for i in range(rounds):
        progress(f"{metric.name}: round {i + 1}/{rounds}")
        if not metric.both_sides:
            sides["cpython"].append(run_cpython(_thread, scale))
            sides["zthread"].append(sides["cpython"][-1])
            continue
        for side in round_order(i):
            sides[side].append(run_cpython(_thread, scale) if side == "cpython" else run_zthread(zt, scale))
    return Result(metric.name, metric.unit, statistics.median(sides["cpython"]), statistics.median(sides["zthread"]),
                  round_ratios(sides["cpython"], sides["zthread"]) if metric.both_sides else ())


def python_version() -> str:
    """3.13.15, or 3.13.15t on a free-threaded build."""
    free_threaded = "t" in getattr(sys, "abiflags", "")
    return "%d.%d.%d" % sys.version_info[:3] + ("t" if free_threaded else "")


def machine() -> str:
    # Not the platform module: on 3.10 it imports subprocess, which imports threading.
    if hasattr(os, "uname"):
        u = os.uname()
        return f"{u.sysname} {u.machine}"
    return f"{sys.platform} {os.environ.get('PROCESSOR_ARCHITECTURE', '?')}"


def header() -> str:
    return f"zthread bench: CPython {python_version()} ({sys.implementation.name}), {machine()}, {os.cpu_count()} CPUs"


def fmt(value: float, unit: str) -> str:
    return f"{value:10.1f} {unit}"


def table(results: list[Result]) -> str:
    lines = [header(), f"{'metric':14} {'CPython _thread':>16} {'zthread':>16} {'ratio':>7}  {'rounds (middle half)':>20}"]
    for r in results:
        if r.metric == "floor":
            lines.append(f"{'floor':14} {fmt(r.cpython, r.unit):>16} {'(two C calls)':>16}")
            continue
        quartiles = r.ratio_quartiles()
        # In brackets, as tools/bench_table.py writes them (and not numbers to CI's check of the main job's rows,
        # tools/readme_commands.py, which wants three per row)
        spread = f"[{quartiles[0]:.2f}, {quartiles[1]:.2f}]" if quartiles else ""
        lines.append(f"{r.metric:14} {fmt(r.cpython, r.unit):>16} {fmt(r.zthread, r.unit):>16} {r.ratio:7.2f}  "
                     f"{spread:>20}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m zthread bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--only", help="comma-separated metric names")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per side (default 7)")
    parser.add_argument("--quick", action="store_true", help="few rounds, short loops (a smoke test)")
    parser.add_argument("--apps", action="store_true",
                        help="threading workloads (Queue, Condition, Event, ThreadPoolExecutor, Thread start+join, "
                             "RLock, fairness) in a fresh interpreter per round and side, instead of the primitives")
    opts = parser.parse_args(argv)
    from zthread import _apps

    known = [a.name for a in _apps.APPS] if opts.apps else [m.name for m in METRICS]
    names = set(opts.only.split(",")) if opts.only else set(known)
    unknown = names - set(known)
    if unknown:
        parser.error(f"unknown {'workload' if opts.apps else 'metric'}(s): {', '.join(sorted(unknown))}"
                     f" (known: {', '.join(known)})")
    wanted = [m for m in METRICS if m.name in names]
    if opts.apps:
        default_rounds = 5 if opts.rounds == parser.get_default("rounds") else opts.rounds
        rounds, scale = (2, 2_000) if opts.quick else (default_rounds, 100_000)
    else:
        rounds, scale = (2, 2_000) if opts.quick else (opts.rounds, 100_000)
    tty = sys.stderr.isatty()

    def progress(text: str) -> None:
        if tty:
            sys.stderr.write(f"\r\x1b[K{text}")
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    if opts.apps:
        apps = [a for a in _apps.APPS if a.name in names]
        results = [Result(*r) for r in _apps.measure(apps, rounds, scale, progress)]
    else:
        results = [measure(m, rounds, scale, progress) for m in wanted]
    if tty:
        sys.stderr.write("\r\x1b[K")
    if opts.json:
        doc = {
            "python": python_version(), "platform": machine(),
            "cpus": os.cpu_count(), "rounds": rounds, "set": "apps" if opts.apps else "primitives",
            "metrics": [{"metric": r.metric, "unit": r.unit, "cpython": r.cpython, "zthread": r.zthread,
                         "ratio": r.ratio, "round_ratios": list(r.round_ratios),
                         "round_ratio_quartiles": r.ratio_quartiles()} for r in results],
        }
        print(json.dumps(doc, indent=2))
    else:
        print(table(results))
    return 0
