"""zthread with its threads really in parallel: free-threaded CPython (3.13t), 8 or more threads per test.

Every test starts its threads together (behind a barrier made of zthread locks), then has them all hit the same
primitive at once: mixed blocking / non-blocking / timed acquires, release from another thread, RLock, _local,
start_joinable_thread and join, set_name and _count. No exclusion may break, no wake-up may be lost, nothing may
crash. Every join is bounded: a deadlock fails, it does not hang. The tests run on every build (under a GIL the
threads interleave instead of running in parallel, and every assertion still holds); CI runs them on 3.13t.

The defaults keep a CI run short; longer runs (RELIABILITY.md's figures) scale up:
  ZTHREAD_FT_THREADS      threads per test (default 8, at least 8 is meant)
  ZTHREAD_FT_ITERATIONS   iterations per thread (default 3000)
  ZTHREAD_FT_WAIT         seconds a test's threads may take before it fails as a deadlock (default 60)
"""

from __future__ import annotations

import functools
import gc
import json
import os
import random
import subprocess
import sys
import sysconfig
import textwrap
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

import zthread
from zthread import _zthread

THREADS = int(os.environ.get("ZTHREAD_FT_THREADS", "8"))
ITERATIONS = int(os.environ.get("ZTHREAD_FT_ITERATIONS", "3000"))
# The longest any join below may take: a deadlock or a lost wake-up fails instead of hanging. Longer under
# ThreadSanitizer (tools/tsan.py sets it), which runs this code 10-20 times slower.
WAIT = float(os.environ.get("ZTHREAD_FT_WAIT", "60"))
# How late a timed acquire may return and still count as "not stuck": generous, because the threads may share
# 2 cores with each other and with other processes; a lost wake-up would show as the full wait or a hang.
LATE_BOUND_S = 5.0
# A timed wait may not return before its timeout, read on the same clock; the clock's own step is the only slack.
CLOCK_STEP = time.get_clock_info("monotonic").resolution
LINUX = sys.platform.startswith("linux")


def gil_state() -> str:
    """What the figures say of the build: a free-threaded build may have the GIL turned back on (PYTHON_GIL=1,
    or an extension that does not declare it can run without)."""
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        return "GIL build"
    return "free-threaded, GIL disabled" if gil_disabled() else "free-threaded, GIL enabled"


def gil_disabled() -> bool:
    is_gil_enabled: Callable[[], bool] | None = getattr(sys, "_is_gil_enabled", None)  # 3.13+
    return is_gil_enabled is not None and not is_gil_enabled()


def run_parallel(count: int, body: Callable[[int], None]) -> None:
    """Runs body(0) ... body(count - 1) in `count` zthread threads (start_joinable_thread) released together
    once all have started; joins each with a deadline and fails if one is still running then. Re-raises the
    first exception a thread raised (with its traceback)."""
    errors: list[BaseException] = []
    guard = zthread.allocate_lock()
    arrived = [0, 0]  # [started, through the gate], written under `guard`
    everyone_here = zthread.allocate_lock()
    everyone_here.acquire()
    gate = zthread.allocate_lock()
    gate.acquire()

    def wrapper(index: int) -> None:
        try:
            with guard:
                arrived[0] += 1
                if arrived[0] == count:
                    everyone_here.release()
            assert gate.acquire(timeout=WAIT), "the start gate never opened"
            gate.release()  # a turnstile: each thread through it lets the next one through
            with guard:
                arrived[1] += 1
            deadline = time.monotonic() + WAIT
            while arrived[1] < count:  # then all start within microseconds of each other
                assert time.monotonic() < deadline, "the other threads never came through the gate"
                time.sleep(0)
            body(index)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(e)

    handles = [_zthread.start_joinable_thread(functools.partial(wrapper, i)) for i in range(count)]
    try:
        assert everyone_here.acquire(timeout=WAIT), f"only {arrived[0]} of {count} threads started"
    finally:
        gate.release()
    deadline = time.monotonic() + WAIT
    for handle in handles:
        handle.join(max(0.0, deadline - time.monotonic()))
    running = sum(not handle.is_done() for handle in handles)
    assert running == 0, f"{running} of {count} threads still running after {WAIT} s (deadlock? lost wake-up?)"
    if errors:
        raise AssertionError(f"{len(errors)} of {count} threads failed, the first with {errors[0]!r}") from errors[0]


def count_back_to(baseline: int) -> int:
    """Waits (at most WAIT) until zthread._count() is `baseline` again; returns what it is then. A thread is
    counted until a moment after its function returns (and after join() has seen it end)."""
    deadline = time.monotonic() + WAIT
    while zthread._count() != baseline and time.monotonic() < deadline:
        time.sleep(0.001)
    return zthread._count()


def timed_acquire(lock: zthread.LockType | zthread.RLock, timeout: float) -> bool:
    """lock.acquire(timeout=timeout); a wait that fails must have lasted the timeout, and not much longer."""
    t0 = time.monotonic()
    got = lock.acquire(timeout=timeout)
    waited = time.monotonic() - t0
    assert got is True or got is False
    if not got:
        assert waited >= timeout - CLOCK_STEP, f"timed acquire gave up after {waited} s < {timeout} s"
        assert waited < timeout + LATE_BOUND_S, f"timed acquire stuck {waited} s past {timeout} s"
    return got


def mixed_acquire(lock: zthread.LockType | zthread.RLock, rng: random.Random, stats: dict[str, int]) -> bool:
    """One acquire chosen at random: blocking, non-blocking (counted in stats["busy"] when refused) or timed
    (stats["timed_out"]). True if the lock was acquired."""
    mode = rng.randrange(3)
    if mode == 0:
        assert lock.acquire() is True
        return True
    if mode == 1:
        if lock.acquire(False):
            return True
        stats["busy"] += 1
        return False
    if timed_acquire(lock, rng.choice([0.0001, 0.001, 0.005])):
        return True
    stats["timed_out"] += 1
    return False


# ---- locks ----


def test_mutual_exclusion_under_parallel_blocking_nonblocking_and_timed_acquires() -> None:
    locks = [zthread.allocate_lock() for _ in range(2)]
    # Shared state written only under lock i: a read-modify-write that other threads would break in the middle
    # if two of them were inside at once (with no GIL nothing else serializes them).
    totals = [[0] for _ in locks]
    inside = [0 for _ in locks]
    owners: list[int | None] = [None for _ in locks]
    per_thread = [{"acquired": 0, "busy": 0, "timed_out": 0, "broken": 0} for _ in range(THREADS)]

    def body(me: int) -> None:
        rng = random.Random(me)
        stats = per_thread[me]
        for _ in range(ITERATIONS):
            i = rng.randrange(len(locks))
            lock = locks[i]
            if not mixed_acquire(lock, rng, stats):
                continue
            try:
                inside[i] += 1
                if inside[i] != 1 or owners[i] is not None:
                    stats["broken"] += 1
                owners[i] = me
                value = totals[i][0]
                scratch = value
                for _ in range(rng.randrange(30)):  # widens the window between the read and the write
                    scratch = scratch * 3 % 1_000_003
                if rng.random() < 0.2:
                    time.sleep(0)  # lets the GIL go (GIL builds) while holding the lock: others park on it
                if owners[i] != me or inside[i] != 1:
                    stats["broken"] += 1
                totals[i][0] = value + 1
                owners[i] = None
                inside[i] -= 1
            finally:
                lock.release()
            stats["acquired"] += 1

    run_parallel(THREADS, body)
    stats = {k: sum(t[k] for t in per_thread) for k in per_thread[0]}
    print(f"{THREADS} threads x {ITERATIONS} acquires, {len(locks)} locks ({gil_state()}): {stats}")
    assert stats["broken"] == 0, f"{stats['broken']} times two threads were inside the same lock"
    assert sum(t[0] for t in totals) == stats["acquired"] > 0
    assert stats["acquired"] + stats["busy"] + stats["timed_out"] == THREADS * ITERATIONS
    assert stats["busy"] > 0  # the load was real: locks were found held
    assert not any(lock.locked() for lock in locks)


def test_release_from_another_thread_in_parallel_pairs() -> None:
    # THREADS // 2 pairs, all at once. In each pair a baton goes back and forth through two locks, each
    # released by the thread that did not acquire it; the holder of the baton writes a payload the other side
    # reads after its acquire (the release/acquire pair must order memory: nothing else does with no GIL).
    pairs = max(THREADS // 2, 1)
    rounds = ITERATIONS
    batons = [(zthread.allocate_lock(), zthread.allocate_lock()) for _ in range(pairs)]
    for _, pong in batons:
        pong.acquire()  # side 0 starts with the baton
    payload = [[0, 0] for _ in range(pairs)]  # [whose turn, sequence]
    per_thread = [{"round trips": 0, "timed retries": 0, "polls": 0} for _ in range(2 * pairs)]

    def body(me: int) -> None:
        pair, side = divmod(me, 2)
        ping, pong = batons[pair]
        mine, theirs = (ping, pong) if side == 0 else (pong, ping)
        rng = random.Random(me)
        stats = per_thread[me]
        for n in range(rounds):
            mode = rng.randrange(4)
            if mode == 0:
                assert mine.acquire() is True  # a lost wake-up hangs here: run_parallel's deadline fails it
            elif mode == 1:
                assert mine.acquire(timeout=WAIT), "lost wake-up: the other side never released"
            elif mode == 2:
                deadline = time.monotonic() + WAIT
                while not timed_acquire(mine, rng.choice([0.0001, 0.001])):
                    stats["timed retries"] += 1
                    assert time.monotonic() < deadline, "lost wake-up: the other side never released"
            else:
                deadline = time.monotonic() + WAIT
                while not mine.acquire(False):
                    stats["polls"] += 1
                    assert time.monotonic() < deadline, "the other side never released"
                    time.sleep(0)
            turn, sequence = payload[pair]
            assert turn == side, f"pair {pair}: side {side} got the baton on side {turn}'s turn"
            assert sequence == 2 * n + side, f"pair {pair}: saw sequence {sequence}, expected {2 * n + side}"
            payload[pair][1] = sequence + 1
            payload[pair][0] = 1 - side
            stats["round trips"] += 1
            theirs.release()  # acquired by the other thread

    run_parallel(2 * pairs, body)
    stats = {k: sum(t[k] for t in per_thread) for k in per_thread[0]}
    print(f"{pairs} pairs x {rounds} round trips, each lock released by the thread that did not acquire it "
          f"({gil_state()}): {stats}, no lost wake-up")
    assert [t["round trips"] for t in per_thread] == [rounds] * (2 * pairs)
    assert payload == [[0, 2 * rounds]] * pairs
    for ping, pong in batons:  # a whole number of round trips leaves the batons where they started
        assert not ping.locked() and pong.locked()
        pong.release()


def test_rlock_recursion_from_many_threads() -> None:
    rlock = zthread.RLock()
    total = [0]
    inside = [0]
    has_count = hasattr(rlock, "_recursion_count")
    per_thread = [{"entered": 0, "depth": 0, "busy": 0, "timed_out": 0, "refused": 0, "saved": 0, "broken": 0}
                  for _ in range(THREADS)]

    def enter_critical(stats: dict[str, int]) -> None:
        inside[0] += 1
        if inside[0] != 1:
            stats["broken"] += 1

    def leave_critical(stats: dict[str, int]) -> None:
        if inside[0] != 1:
            stats["broken"] += 1
        inside[0] -= 1

    def body(me: int) -> None:
        rng = random.Random(me)
        stats = per_thread[me]
        for _ in range(ITERATIONS // 2):
            if rng.random() < 0.2:  # release by a thread that does not own it: refused, whoever owns it
                with pytest.raises(RuntimeError, match="^cannot release un-acquired lock$"):
                    rlock.release()
                stats["refused"] += 1
            if not mixed_acquire(rlock, rng, stats):
                continue
            depth = rng.randint(1, 4)
            try:
                enter_critical(stats)
                for level in range(2, depth + 1):  # the owner's nested acquires never wait, whatever the mode
                    nested = rng.randrange(3)
                    got = (rlock.acquire() if nested == 0 else rlock.acquire(False) if nested == 1
                           else rlock.acquire(timeout=0.001))
                    assert got is True
                    assert rlock._is_owned()
                    if has_count:
                        assert rlock._recursion_count() == level
                assert rlock._is_owned() and rlock.locked()
                if has_count:
                    assert rlock._recursion_count() == depth
                value = total[0]
                if rng.random() < 0.2:
                    time.sleep(0)
                total[0] = value + depth
                if rng.random() < 0.1:  # what threading.Condition.wait does: let go at any depth, take back
                    leave_critical(stats)
                    state = rlock._release_save()
                    assert not rlock._is_owned() and state[0] == depth
                    rlock._acquire_restore(state)
                    enter_critical(stats)
                    stats["saved"] += 1
                    assert rlock._is_owned()
                    if has_count:
                        assert rlock._recursion_count() == depth
                leave_critical(stats)
            finally:
                for _ in range(depth):
                    rlock.release()
            assert not rlock._is_owned()
            if has_count:
                assert rlock._recursion_count() == 0
            stats["entered"] += 1
            stats["depth"] += depth

    run_parallel(THREADS, body)
    stats = {k: sum(t[k] for t in per_thread) for k in per_thread[0]}
    print(f"{THREADS} threads x {ITERATIONS // 2} rounds on one RLock, depths 1-4 ({gil_state()}): {stats}")
    assert stats["broken"] == 0, f"{stats['broken']} times two threads were inside the RLock"
    assert total[0] == stats["depth"] > 0 and stats["entered"] > 0
    assert stats["refused"] > 0 and stats["busy"] > 0
    assert not rlock.locked() and not rlock._is_owned()
    with pytest.raises(RuntimeError, match="^cannot release un-acquired lock$"):
        rlock.release()


# ---- _local ----


class Tagged(_zthread._local):
    """A _local subclass whose __init__ takes arguments: CPython calls it again, with the same arguments, in
    each thread that first touches the object. `kind` is a class attribute an instance attribute may shadow."""

    kind: object = "class attribute"
    inits: ClassVar[list[int]] = []  # the thread of each __init__ call (list.append is atomic, with or without a GIL)

    def __init__(self, tag: str, *, start: int) -> None:
        self.tag = tag
        self.count = start
        self.owner = zthread.get_ident()
        Tagged.inits.append(self.owner)


class Token:
    """A value a thread stores in a _local: it must die once the thread has ended."""


def test_local_read_and_written_from_many_threads() -> None:
    loc = _zthread._local()
    loc.value = "main"
    Tagged.inits.clear()
    tagged = Tagged("shared", start=100)
    ring = [_zthread._local() for _ in range(8)]  # locals other threads replace (and so drop) while in use
    dropped: list[weakref.ref[_zthread._local]] = []
    tokens: list[weakref.ref[Token]] = []
    dicts: list[dict[str, Any] | None] = [None] * THREADS
    per_thread = [{"writes": 0, "locals made": 0, "dropped": 0} for _ in range(THREADS)]

    def body(me: int) -> None:
        rng = random.Random(me)
        stats = per_thread[me]
        ident = zthread.get_ident()
        # First touch in this thread: a fresh dict, and Tagged.__init__ called here with the same arguments.
        assert not hasattr(loc, "value") and loc.__dict__ == {}
        assert (tagged.tag, tagged.count, tagged.owner, tagged.kind) == ("shared", 100, ident, "class attribute")
        mine = loc.__dict__
        dicts[me] = mine
        token = Token()
        tagged.token = token
        tokens.append(weakref.ref(token))
        del token
        for i in range(ITERATIONS):
            loc.value = (me, i)
            setattr(loc, f"a{i % 5}", me)
            tagged.count += 1  # per thread: no other thread's increment may land here
            shadow = i % 3 == 0
            if shadow:
                tagged.kind = me
            if rng.random() < 0.1:
                time.sleep(0)  # GIL builds: others write in between
            assert loc.value == (me, i), f"thread {me} reads {loc.value!r} from its own _local"
            assert loc.__dict__ is mine and mine["value"] == (me, i)
            assert set(mine) == {"value"} | {f"a{k}" for k in range(min(i + 1, 5))}
            assert all(getattr(loc, f"a{k}") == me for k in range(min(i + 1, 5)))
            assert tagged.count == 101 + i and tagged.tag == "shared" and tagged.owner == ident
            assert tagged.kind == (me if shadow else "class attribute")
            if shadow:
                del tagged.kind  # the class attribute shows again, for this thread only
            if i % 10 == 0:  # deleting an attribute leaves the other threads' alone
                del loc.a0
                assert not hasattr(loc, "a0")
                loc.a0 = me
            # Many locals made, used and dropped in parallel, some while other threads use them.
            temp = _zthread._local()
            temp.x = (me, i)
            assert temp.x == (me, i) and temp.__dict__ == {"x": (me, i)}
            del temp
            k = rng.randrange(len(ring))
            shared = ring[k]
            shared.v = (me, i)
            if rng.random() < 0.05:
                ring[k] = _zthread._local()
                dropped.append(weakref.ref(shared))
                stats["dropped"] += 1
            if rng.random() < 0.2:
                time.sleep(0)
            assert shared.v == (me, i)
            del shared
            stats["writes"] += 1
            stats["locals made"] += 1
        if me == 0:
            gc.collect()  # while the others still run

    baseline = zthread._count()
    run_parallel(THREADS, body)
    stats = {k: sum(t[k] for t in per_thread) for k in per_thread[0]}
    # Each thread had a dict of its own, holding its own last values.
    assert len({id(d) for d in dicts}) == THREADS
    assert [d["value"] if d else None for d in dicts] == [(me, ITERATIONS - 1) for me in range(THREADS)]
    del dicts[:]
    # The main thread's view is untouched; __init__ ran once here (at creation) and once in each thread.
    assert loc.value == "main" and loc.__dict__ == {"value": "main"}
    assert (tagged.tag, tagged.count, tagged.owner, tagged.kind) == ("shared", 100, zthread.get_ident(),
                                                                     "class attribute")
    assert len(Tagged.inits) == 1 + THREADS
    # Once the threads have ended, what they stored is freed: their dicts go with them.
    assert count_back_to(baseline) == baseline
    deadline = time.monotonic() + WAIT
    while (any(r() is not None for r in tokens) or any(r() is not None for r in dropped)) and \
            time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert len(tokens) == THREADS
    assert not [r for r in tokens if r() is not None], "a thread's _local values outlived the thread"
    assert not [r for r in dropped if r() is not None], "a dropped _local stayed alive"
    # A thread started now (often with the identifier of one that ended) sees a fresh dict, and __init__ again.
    for n in range(4):
        seen: list[object] = []

        def fresh() -> None:
            seen.append((hasattr(loc, "value"), loc.__dict__, tagged.owner == zthread.get_ident(), tagged.count,
                         tagged.kind))

        handle = _zthread.start_joinable_thread(fresh)
        handle.join(WAIT)
        assert handle.is_done()
        assert seen == [(False, {}, True, 100, "class attribute")]
        assert len(Tagged.inits) == 1 + THREADS + n + 1
    print(f"{THREADS} threads x {ITERATIONS} on shared _locals ({gil_state()}): {stats}; every value a thread's own, "
          "freed after it ended")


# ---- threads: start_joinable_thread, join, set_name, _count ----


def test_many_threads_starting_one_handle_start_it_once() -> None:
    # threading.Thread.start() from two threads at once reaches start_joinable_thread(handle=) twice: exactly one
    # call may start the thread, the others get CPython's "thread already started".
    rounds = max(ITERATIONS // 30, 20)
    outcomes = {"started": 0, "refused": 0}
    for _ in range(rounds):
        handle = _zthread._ThreadHandle()
        ran: list[int] = []
        results: list[str] = []  # list.append is atomic on every build

        def body(me: int) -> None:
            try:
                _zthread.start_joinable_thread(functools.partial(ran.append, me), handle=handle)
                results.append("started")
            except RuntimeError as e:
                assert str(e) == "thread already started"
                results.append("refused")

        run_parallel(THREADS, body)
        handle.join(WAIT)
        assert handle.is_done()
        assert sorted(results) == ["refused"] * (THREADS - 1) + ["started"], results
        assert len(ran) == 1, f"the thread ran {len(ran)} times"
        for k in outcomes:
            outcomes[k] += results.count(k)
    print(f"{THREADS} threads starting one handle at once, {rounds} rounds ({gil_state()}): {outcomes}, "
          f"each handle's thread ran once")


def test_start_joinable_thread_and_join_from_many_threads() -> None:
    baseline = zthread._count()
    children = max(ITERATIONS // 20, 4)
    batch = 4
    per_thread = [{"started": 0} for _ in range(THREADS)]

    def body(me: int) -> None:
        # Each thread starts batches of short joinable threads, all alive at once, then joins them.
        rng = random.Random(me)
        stats = per_thread[me]
        for _ in range(children // batch):
            seen: list[int | None] = [None] * batch
            handles = []
            for k in range(batch):
                def child(k: int = k, spins: int = rng.randrange(200)) -> None:
                    for _ in range(spins):
                        pass
                    seen[k] = zthread.get_ident()

                handles.append(_zthread.start_joinable_thread(child))
                stats["started"] += 1
            for handle in handles:
                handle.join(WAIT)
                assert handle.is_done()
                handle.join()  # an ended thread: returns at once
            assert [h.ident for h in handles] == seen
            assert len(set(seen)) == batch  # alive at once (not yet joined): distinct identifiers

    run_parallel(THREADS, body)
    started = sum(t["started"] for t in per_thread)
    assert started == THREADS * (children // batch) * batch
    assert count_back_to(baseline) == baseline

    # Many threads join the SAME handle at once, each after a timed join that must return with the thread
    # still running; the last of those lets the thread end. Every join returns, none hangs.
    rounds = max(ITERATIONS // 100, 3)
    joins = [0]
    guard = zthread.allocate_lock()
    for _ in range(rounds):
        gate = zthread.allocate_lock()
        gate.acquire()
        ran: list[int] = []
        timed = [0]

        def target() -> None:
            assert gate.acquire(timeout=WAIT)
            ran.append(zthread.get_ident())

        handle = _zthread.start_joinable_thread(target)

        def joiner(me: int) -> None:
            timeout = random.Random(me).choice([0.001, 0.005, 0.02])
            t0 = time.monotonic()
            handle.join(timeout)
            waited = time.monotonic() - t0
            assert not handle.is_done(), "join(timeout) returned with the thread done: the gate is still closed"
            assert waited >= timeout - CLOCK_STEP, f"join({timeout}) returned after {waited} s"
            with guard:
                timed[0] += 1
                last = timed[0] == THREADS
            if last:
                gate.release()  # acquired by the main thread: released from this one
            if me % 2:
                handle.join()
            else:
                handle.join(WAIT)
            assert handle.is_done()
            with guard:
                joins[0] += 1

        run_parallel(THREADS, joiner)
        assert handle.is_done() and ran == [handle.ident]
    assert joins[0] == rounds * THREADS
    assert count_back_to(baseline) == baseline
    print(f"{THREADS} threads started and joined {started} joinable threads; {rounds} rounds of {THREADS} threads "
          f"joining the same handle ({gil_state()}): all clean")


def comm_of(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().rstrip("\n")


def test_set_name_and_count_while_threads_start_and_stop() -> None:
    baseline = zthread._count()
    has_comm = LINUX and os.path.exists(f"/proc/self/task/{zthread.get_native_id()}/comm")
    main_name = comm_of(zthread.get_native_id()) if has_comm else None
    max_len = zthread._NAME_MAXLEN
    rounds = max(ITERATIONS // 10, 10)
    # Every zthread thread this test starts (a joined child may be counted a moment longer: no tighter bound).
    most = baseline + THREADS + THREADS * len(range(0, rounds, 4))
    per_thread = [{"named": 0, "children": 0, "counts": 0} for _ in range(THREADS)]

    def expected(name: str) -> str:
        return name.encode()[:max_len].decode()  # ASCII: cut at a byte is cut at a character

    def check_name(name: str) -> None:
        assert zthread._get_name() == expected(name)
        if has_comm:
            assert comm_of(zthread.get_native_id()) == expected(name), "the OS shows another thread's name"

    def check_count(at_least: int) -> None:
        n = zthread._count()
        assert at_least <= n <= most, f"_count() is {n}: at least {at_least} running, at most {most} started"

    def body(me: int) -> None:
        rng = random.Random(me)
        stats = per_thread[me]
        for i in range(rounds):
            name = f"ft{me}-{i}-" + "x" * rng.randrange(20)  # often longer than the OS keeps
            zthread.set_name(name)
            stats["named"] += 1
            check_count(1)  # this thread
            stats["counts"] += 1
            if rng.random() < 0.1:
                time.sleep(0)
            check_name(name)
            if i % 4 == 0:  # a child that names itself while the parent reads _count
                gate, running = zthread.allocate_lock(), zthread.allocate_lock()
                gate.acquire()
                running.acquire()

                def child(name: str = f"c{me}-{i}-child-of-{me}") -> None:
                    zthread.set_name(name)
                    check_name(name)
                    running.release()
                    assert gate.acquire(timeout=WAIT)

                handle = _zthread.start_joinable_thread(child)
                stats["children"] += 1
                assert running.acquire(timeout=WAIT)
                check_count(2)  # this thread and its child, running and held at the gate
                stats["counts"] += 1
                gate.release()
                handle.join(WAIT)
                assert handle.is_done()
                check_name(name)  # the child named itself, not this thread

    run_parallel(THREADS, body)
    stats = {k: sum(t[k] for t in per_thread) for k in per_thread[0]}
    if has_comm:
        assert comm_of(zthread.get_native_id()) == main_name  # the threads named themselves, not this one
    assert count_back_to(baseline) == baseline
    print(f"{THREADS} threads naming themselves and reading _count() ({gil_state()}, names checked "
          f"{'in /proc' if has_comm else 'with _get_name'}): {stats}, _count() back to {baseline}")


# ---- the GIL stays off ----


def usable_cpus() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


GIL_STAYS_OFF = textwrap.dedent(
    """
    import _thread, json, sys, time
    out = {"start": sys._is_gil_enabled()}
    import zthread
    out["import"] = sys._is_gil_enabled()
    zthread.install()
    import threading
    out["install"] = sys._is_gil_enabled()
    lock, rlock, loc = zthread.allocate_lock(), zthread.RLock(), zthread._zthread._local()
    with lock, rlock:
        loc.x = 1
    t = threading.Thread(target=zthread.set_name, args=("gil-check",))
    t.start()
    t.join()
    out["used"] = sys._is_gil_enabled()

    def spin(seconds, done):
        t0 = time.thread_time()
        n = 0
        while time.thread_time() - t0 < seconds:
            for _ in range(10_000):
                n += 1
        done.append(n)

    def cpu_per_wall(start_joinable_thread):
        # Two threads of pure-Python work, 0.3 s of CPU each: in parallel, the process gets about twice the
        # wall time in CPU time; under a GIL (or anything else that serializes them) at most as much.
        done = []
        wall0, cpu0 = time.monotonic(), time.process_time()
        handles = [start_joinable_thread(lambda: spin(0.3, done)) for _ in range(2)]
        for h in handles:
            h.join(60)
        assert len(done) == 2
        return (time.process_time() - cpu0) / (time.monotonic() - wall0)

    # zthread's threads, and CPython's own as the control (what this machine's load leaves to this process).
    out["zthread"], out["_thread"] = [], []
    for _ in range(int(sys.argv[1])):
        out["zthread"].append(cpu_per_wall(zthread._zthread.start_joinable_thread))
        if out["zthread"][-1] > 1.3:
            break
        out["_thread"].append(cpu_per_wall(_thread.start_joinable_thread))
    out["end"] = sys._is_gil_enabled()
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not gil_disabled(), reason="a free-threaded CPython with the GIL disabled")
def test_the_gil_stays_disabled_and_zthread_threads_run_in_parallel(tmp_path: Path) -> None:
    # -I: PYTHON_GIL from the environment cannot force the GIL off; importing an extension that does not
    # declare Py_MOD_GIL_NOT_USED would turn it back on (with a RuntimeWarning on stderr).
    tries = 4 if usable_cpus() >= 2 else 0
    proc = subprocess.run([sys.executable, "-I", "-c", GIL_STAYS_OFF, str(tries)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=WAIT * 2)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = json.loads(proc.stdout)
    assert {k: out[k] for k in ("start", "import", "install", "used", "end")} == dict.fromkeys(
        ("start", "import", "install", "used", "end"), False)
    ours = [round(r, 2) for r in out["zthread"]]
    control = [round(r, 2) for r in out["_thread"]]
    print(f"GIL still disabled after import zthread, install(), threading on zthread; process CPU / wall clock "
          f"with 2 spinning threads: zthread {ours}, CPython's _thread {control}")
    if tries == 0:
        pytest.skip("one usable CPU: parallelism not measurable")
    # Under a GIL the ratio stays at or below 1. On an idle machine zthread's threads pass at the first try; on
    # one whose other load leaves this process a single core, CPython's own threads cannot pass either.
    if max(ours) <= 1.3 and max(control) <= 1.3:
        pytest.skip(f"this machine's load left the process one core: even CPython's threads got {control}")
    assert max(ours) > 1.3, f"zthread's threads never ran in parallel ({ours}) while CPython's did ({control})"
