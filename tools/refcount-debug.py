#!/usr/bin/env python3
"""zthread on CPython 3.14's debug build (Py_DEBUG, from Debian sid): reference totals flat, tests pass.

    python3 tools/refcount-debug.py [--rounds N]

1. Fetches python3.14d (tools/fetch-pythons.sh .pythons --debug) and builds zthread with -Dref-calls (every
   reference counted through Py_IncRef/Py_DecRef, so the debug build's sys.gettotalrefcount() sees them all)
   in Zig's Debug mode (its safety checks on: an overflow or a bad cast panics instead of passing).
2. Runs every entry point of the native module (locks, RLock, threads with arguments, exceptions and
   SystemExit, joinable handles, thread-locals with and without __init__, names, stack sizes, and the error
   path of each with bad arguments) in two stretches of N rounds after a warm-up and checks that
   sys.gettotalrefcount() and sys.getallocatedblocks() end where they started in at least one (a leak of
   one reference per round would show as N in both).
3. Creates, uses (threading on zthread: threads, Lock, RLock, Condition, local, joinable handles) and closes
   N/2 isolated subinterpreters, twice, after a warm-up, and checks the same totals: every object zthread made
   in an interpreter must be freed with it (a leaked one would also keep that interpreter's memory arenas).
4. Runs the project's API, fuzzing, drop-in, reliability and subinterpreter tests on the debug interpreter
   (its assertions catch a wrong reference count or a call without the GIL as a crash).

Run with any Python that has pip (CI: the same 3.11 as tools/wheels.py); needs `ziglang` importable, or
uses .venv-release's (tools/wheels.py makes it).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON_D = ROOT / ".pythons" / "3.14d" / "bin" / "python3.14d"

WORKLOAD = r'''
import gc, importlib, signal, sys, time, weakref
zt = importlib.import_module(sys.argv[2])  # zthread._zthread, or CPython's _thread for comparison

sys.unraisablehook = lambda args: None  # the threads below raise on purpose
signal.signal(signal.SIGUSR1, lambda *a: None)
BAD = [None, "x", -2, -1.5, float("nan"), float("inf"), 1e300, 2**70, -(2**70), True, 1.5, object()]


def swallow(f, *args, **kwargs):
    try:
        return f(*args, **kwargs)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        return None


class Local(zt._local):
    def __init__(self, value):
        self.value = value


def exercise(rounds):
    for _ in range(rounds):
        lock = zt.allocate_lock()
        lock.acquire(); lock.release()
        lock.acquire(True); lock.release()
        lock.acquire(blocking=True, timeout=0.5); lock.release()
        lock.acquire(timeout=1); lock.release()
        with lock:
            assert lock.acquire(False) is False
            assert lock.acquire(timeout=0.0001) is False
            assert lock.locked()
            repr(lock)
        swallow(lock.release)
        for bad in BAD:  # on a free lock, so that an acquire that is accepted returns at once (and is undone)
            for call in ((bad,), (True, bad)):
                if swallow(lock.acquire, *call) is True:
                    lock.release()
            if swallow(lock.acquire, timeout=bad) is True:
                lock.release()
            if swallow(lock.acquire, blocking=bad, timeout=0) is True:
                lock.release()
        swallow(lock.acquire, 1, 2, 3)
        swallow(lock.acquire, nope=1)
        swallow(lock.acquire, True, blocking=True)
        ref = weakref.ref(lock)
        lock._at_fork_reinit()
        lock.acquire_lock(); lock.locked_lock(); lock.release_lock()
        del lock
        assert ref() is None

        rlock = zt.RLock()
        with rlock:
            with rlock:
                rlock._is_owned(); rlock._recursion_count(); repr(rlock)
                state = rlock._release_save()
                rlock._acquire_restore(state)
        swallow(rlock.release)
        swallow(rlock._release_save)
        for bad in BAD:  # a free RLock: whatever is accepted returns at once
            if swallow(rlock.acquire, bad) is True:
                rlock.release()
            if swallow(rlock.acquire, timeout=bad) is True:
                rlock.release()
            swallow(rlock._acquire_restore, bad)
        swallow(zt.RLock, 1)

        done = zt.allocate_lock()
        done.acquire()
        def target(a, b=None, *, c=None):
            if c == "raise":
                done.release()
                raise KeyError(a)
            if c == "exit":
                done.release()
                raise SystemExit
            done.release()
        zt.start_new_thread(target, (object(),), {"b": [1], "c": None}); done.acquire()
        zt.start_new_thread(target, ("x",), {"c": "raise"}); done.acquire()
        zt.start_new_thread(target, ("x",), {"c": "exit"}); done.acquire()
        for bad in BAD:
            swallow(zt.start_new_thread, target, bad)
            swallow(zt.start_new_thread, bad, ())
            swallow(zt.start_new_thread, target, (), bad)

        if hasattr(zt, "_start_thread"):  # zthread's own (start_thread's native half)
            zt._start_thread(done.release, 1 << 20, True).join()
            done.acquire()
            for bad in BAD:
                swallow(zt._start_thread, done.release, bad)
        handle = zt.start_joinable_thread(lambda: done.release())
        done.acquire()
        handle.join(); handle.join(0.5); handle.is_done(); handle.ident; repr(handle)
        for bad in BAD:
            swallow(handle.join, bad)
        swallow(zt.start_joinable_thread, None)

        plain = zt._local()
        plain.x = [1]
        local = Local(value=[2])
        def use_locals():
            plain.x = [3]
            local.value
            local.other = {}
            done.release()
        zt.start_new_thread(use_locals, ()); done.acquire()
        swallow(zt._local, 1)

        zt.get_ident(); zt.get_native_id(); zt._count()
        size = zt.stack_size()
        zt.stack_size(1 << 20); zt.stack_size(size)
        for bad in BAD:
            swallow(zt.stack_size, bad)
        zt.set_name("zthread-debug"); zt._get_name()
        for bad in BAD:
            swallow(zt.set_name, bad)
        zt.interrupt_main(signal.SIGUSR1)
        for bad in BAD:
            swallow(zt.interrupt_main, bad)
        swallow(zt.allocate_lock, 1)
        swallow(zt.get_ident, 1)
    deadline = time.monotonic() + 30
    while zt._count() and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.01)  # the last thread's state is deleted just after _count() drops


step = exercise
WHAT = "rounds of every entry point"
'''

# What both workloads end with: `step(n)` runs n rounds; a warm-up, then two measured stretches.
MEASURE = r'''
def totals():
    gc.collect()
    return sys.gettotalrefcount(), sys.getallocatedblocks()


rounds = int(sys.argv[1])
step(max(rounds // 5, 2))  # warm-up: caches, interned names, free lists
# Two measured stretches of `rounds` rounds each: a leak per round grows both alike, while a one-off move
# (a cache or a container resizing, seen as +260 once in CI) shows in one only. The better one is judged.
stretches = []
for _ in range(2):
    before = totals()
    step(rounds)
    after = totals()
    stretches.append((after[0] - before[0], after[1] - before[1]))
print(f"refcount-debug: {sys.argv[2]}: {rounds} {WHAT}, twice: total references "
      f"{stretches[0][0]:+d} then {stretches[1][0]:+d}, allocated blocks {stretches[0][1]:+d} then {stretches[1][1]:+d}")
# A leak of one reference or block per round shows as >= rounds in both; CPython's own caches move a few.
refs, blocks = min(stretches, key=lambda s: abs(s[0]) + abs(s[1]))
sys.exit(0 if abs(refs) < rounds // 4 and abs(blocks) < rounds // 4 else 1)
'''

SUBINTERP_WORKLOAD = r'''
import gc, sys
from concurrent import interpreters

PREFIX = "import zthread; zthread.install()\n" if sys.argv[2] == "zthread" else ""
CODE = PREFIX + """
import _thread, threading
lock, rlock, cond, n = threading.Lock(), threading.RLock(), threading.Condition(), [0]
local = threading.local()
def work():
    local.x = [1]
    for _ in range(50):
        with lock:
            n[0] += 1
        with rlock, rlock:
            pass
    with cond:
        cond.notify_all()
ts = [threading.Thread(target=work) for _ in range(3)]
for t in ts: t.start()
for t in ts: t.join()
h = _thread.start_joinable_thread(lambda: None)
h.join()
assert n[0] == 150
"""


def cycle(count):
    for _ in range(count):
        interp = interpreters.create()
        interp.exec(CODE)
        interp.close()


step = cycle
WHAT = "subinterpreters with threads"
'''


def run(cmd: list[str | Path], **kw: object) -> subprocess.CompletedProcess[str]:
    print("+", " ".join(str(c) if len(str(c)) < 200 else "<workload>" for c in cmd), flush=True)
    return subprocess.run(cmd, text=True, **kw)  # type: ignore[call-overload, no-any-return]


def zig_python() -> Path:
    try:
        import ziglang  # noqa: F401
        return Path(sys.executable)
    except ImportError:
        tools = ROOT / ".venv-release" / "bin" / "python"
        if not tools.exists():
            sys.exit("refcount-debug: needs ziglang (pip install ziglang==0.17.1) or .venv-release (tools/wheels.py)")
        return tools


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=400)
    opts = ap.parse_args()
    run(["bash", ROOT / "tools" / "fetch-pythons.sh", ROOT / ".pythons", "--debug"], check=True)
    with tempfile.TemporaryDirectory() as tmp:
        prefix, pkg, site = Path(tmp) / "zig", Path(tmp) / "pkg", Path(tmp) / "site"
        run([zig_python(), "-m", "ziglang", "build", "-Dref-calls", "-Doptimize=Debug", "--prefix", prefix],
            cwd=ROOT, check=True)
        shutil.copytree(ROOT / "zthread", pkg / "zthread", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
        shutil.copy(prefix / "lib" / "_zthread.abi3.so", pkg / "zthread" / "_zthread.abi3.so")
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{pkg}:{site}", "HOME": tmp}
        results = []
        # CPython's own _thread first, for comparison: what its caches move in the same workload.
        for module in ("_thread", "zthread._zthread"):
            proc = run([PYTHON_D, "-X", "dev", "-c", WORKLOAD + MEASURE, str(opts.rounds), module], cwd=tmp, env=env)
        results.append((f"{opts.rounds} rounds of every entry point: reference total and allocated blocks flat",
                        proc.returncode == 0))
        count = opts.rounds // 2
        for module in ("_thread", "zthread"):
            proc = run([PYTHON_D, "-X", "dev", "-c", SUBINTERP_WORKLOAD + MEASURE, str(count), module], cwd=tmp, env=env)
        results.append((f"{count} subinterpreters with threads on zthread, twice: reference total and allocated "
                        "blocks flat", proc.returncode == 0))
        # pytest and hypothesis are pure Python: the host's pip puts them where the debug interpreter finds them.
        run([sys.executable, "-m", "pip", "install", "--quiet", "--target", site, "--python-version", "3.14",
             "--only-binary=:all:", "pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100"], check=True)
        tests = ["tests/test_api.py", "tests/test_fuzz_differential.py", "tests/test_dropin.py",
                 "tests/test_reliability.py", "tests/test_start_thread.py", "tests/test_subinterpreters.py"]
        # -P: the source folder (no binary in it) stays off sys.path; the debug build is ~3x slower.
        proc = run([PYTHON_D, "-P", "-m", "pytest", "-p", "no:cacheprovider", "-q", "-o", "timeout=600", *tests],
                   cwd=ROOT, env=env)
        results.append(("pytest (API, fuzzing, drop-in, reliability, start_thread, subinterpreters) on python3.14d",
                        proc.returncode == 0))
    print("\nrefcount-debug:")
    for what, ok in results:
        print(f"  {'PASS' if ok else 'FAIL'}  {what}")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
