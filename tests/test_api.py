"""Behaviour of the documented `_thread` API on zthread: locks, threads, signals, stack size, ids."""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import sysconfig
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import zthread
from helpers import WAIT, send_soon, stack_size_of_current_thread, start, wait_for_threads

# ---- locks ----


def test_a_lock_is_a_binary_semaphore() -> None:
    lock = zthread.allocate_lock()
    assert not lock.locked()
    assert lock.acquire() is True
    assert lock.locked()
    assert lock.acquire(False) is False
    assert lock.acquire(timeout=0) is False
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        lock.release()


# 2 us and 20 us end inside the 30 us a waiter may spin before it parks (docs/DESIGN.md, "Spinning through a
# hand-over"): the spin ends at the deadline too.
@pytest.mark.parametrize("timeout", [2e-6, 2e-5, 0.01, 0.05, 0.2])
def test_a_timed_acquire_never_returns_before_its_deadline(timeout: float) -> None:
    lock = zthread.allocate_lock()
    lock.acquire()
    t0 = time.monotonic()
    assert lock.acquire(timeout=timeout) is False
    elapsed = time.monotonic() - t0
    assert elapsed >= timeout
    assert elapsed < timeout * 10 + 2  # only catches a wait that never ended
    assert lock.locked()


def test_a_waiter_gets_a_lock_whose_releaser_runs_on_without_waiting_for_a_lock() -> None:
    # Main waits for `back` right after handing `go` to the worker, so (under a GIL, on 2+ CPUs) it spins for
    # it (docs/DESIGN.md, "Spinning through a hand-over"). The worker releases `back` and runs on
    # for 200 us holding the GIL, never waiting for a lock: the cue a spinner waits for before it takes a lock
    # freed under it never comes. Main must still get `back` every time (its spin ends; it takes the free lock).
    go, back = zthread.allocate_lock(), zthread.allocate_lock()
    go.acquire()
    back.acquire()
    rounds = 200

    def worker() -> None:
        for _ in range(rounds):
            if not go.acquire(timeout=WAIT):
                return
            back.release()
            end = time.perf_counter() + 0.0002
            while time.perf_counter() < end:
                pass

    start(worker)
    for _ in range(rounds):
        go.release()
        assert back.acquire(timeout=WAIT) is True
    wait_for_threads()
    assert back.locked() and go.locked()  # main holds the last `back`, the worker took the last `go`


def test_a_lock_released_by_another_thread_wakes_the_waiter() -> None:
    lock = zthread.allocate_lock()
    lock.acquire()

    def release_later() -> None:
        time.sleep(0.05)
        lock.release()

    start(release_later)
    assert lock.acquire(timeout=WAIT) is True  # the other thread released what main acquired
    lock.release()
    wait_for_threads()


def test_a_blocked_acquire_releases_the_gil() -> None:
    lock = zthread.allocate_lock()
    lock.acquire()
    progress = [0]

    def spin() -> None:
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            progress[0] += 1
        lock.release()

    start(spin)
    assert lock.acquire(timeout=WAIT)
    assert progress[0] > 1000  # the spinning Python thread ran while main was blocked
    lock.release()
    wait_for_threads()


def test_mutual_exclusion_under_contention() -> None:
    lock = zthread.allocate_lock()
    done = [zthread.allocate_lock() for _ in range(8)]
    state = {"inside": 0, "max_inside": 0, "count": 0}

    def worker(finished: Any) -> None:
        for i in range(2000):
            ok = lock.acquire(timeout=WAIT) if i % 2 else lock.acquire()
            assert ok
            state["inside"] += 1
            state["max_inside"] = max(state["max_inside"], state["inside"])
            state["count"] += 1
            state["inside"] -= 1
            lock.release()
        finished.release()

    for d in done:
        d.acquire()
        start(worker, d)
    for d in done:
        assert d.acquire(timeout=WAIT * 3)
    assert state == {"inside": 0, "max_inside": 1, "count": 16000}
    wait_for_threads()


def test_context_manager_aliases_and_fork_reinit() -> None:
    lock = zthread.allocate_lock()
    with lock as entered:
        assert entered is True and lock.locked()
    assert not lock.locked()
    assert lock.acquire_lock() and lock.locked_lock()
    lock.release_lock()
    lock.acquire()
    lock._at_fork_reinit()
    assert not lock.locked()


CONDITION_HOOKS = not ((3, 12) <= sys.version_info < (3, 14) and not sysconfig.get_config_var("Py_GIL_DISABLED"))
"""Where zthread's lock has two of threading.Condition's hooks (README: not on 3.12-3.13 with the GIL, where they
cost more than they save)."""
needs_hooks = pytest.mark.skipif(not CONDITION_HOOKS, reason="the lock has no Condition hooks on 3.12-3.13")


def test_the_lock_has_no_is_owned_which_code_reads_as_an_rlocks() -> None:
    """Code tells an RLock from a lock by `hasattr(lock, "_is_owned")`, and reads `_is_owned()` as "owned by the
    calling thread" (some then release the lock): on zthread, as on CPython, a lock has none, on every version."""
    import threading

    lock = zthread.allocate_lock()
    assert not hasattr(lock, "_is_owned") and not hasattr(_thread.allocate_lock(), "_is_owned")
    assert hasattr(zthread.RLock(), "_is_owned")
    cond = threading.Condition(lock)  # type: ignore[arg-type]
    assert cond._is_owned.__self__ is cond  # type: ignore[attr-defined]  # Condition's own fallback


@pytest.mark.skipif(CONDITION_HOOKS, reason="3.12-3.13 with the GIL only")
def test_on_3_12_and_3_13_a_condition_over_the_lock_uses_its_own_fallbacks() -> None:
    import threading

    lock = zthread.allocate_lock()
    assert not any(hasattr(lock, name) for name in ("_release_save", "_acquire_restore"))
    cond = threading.Condition(lock)  # type: ignore[arg-type]
    assert cond._release_save.__self__ is cond and cond._acquire_restore.__self__ is cond  # type: ignore[attr-defined]


@needs_hooks
def test_the_lock_has_conditions_wait_hooks_which_do_what_conditions_fallbacks_do() -> None:
    """zthread's lock has two of threading.Condition's hooks, which CPython's lock lacks (Condition then runs
    Python fallbacks of its own in every `wait`): `_release_save()` is `release()`, `_acquire_restore(state)` is
    `acquire()` with its argument ignored. A Condition over the lock takes them."""
    import threading  # this process's threading, on CPython's _thread: a Condition takes any lock's hooks

    lock: Any = zthread.allocate_lock()  # the stub has no hooks on 3.12-3.13 (nor, so, on 3.13t)
    cond = threading.Condition(lock)
    assert cond._release_save.__self__ is lock and cond._acquire_restore.__self__ is lock  # type: ignore[attr-defined]
    lock.acquire()
    assert lock._release_save() is None and not lock.locked()
    with pytest.raises(RuntimeError, match="^release unlocked lock$"):
        lock._release_save()
    assert lock._acquire_restore(None) is None and lock.locked()
    # held, and released by another thread 50 ms later: _acquire_restore waits for that release, as acquire() does
    def release_later() -> None:
        time.sleep(0.05)
        lock.release()

    t0 = time.monotonic()
    start(release_later)
    assert lock._acquire_restore((1, 2)) is None and lock.locked()
    assert time.monotonic() - t0 >= 0.05  # it waited for the release, which came 50 ms after t0
    lock.release()
    with pytest.raises(TypeError, match=r"takes exactly one argument \(0 given\)"):
        lock._acquire_restore()
    with pytest.raises(TypeError, match="takes no arguments"):
        lock._release_save(1)
    assert not lock.locked()
    wait_for_threads()


def test_a_condition_over_a_lock_waits_and_is_notified() -> None:
    import threading

    cond = threading.Condition(zthread.allocate_lock())  # type: ignore[arg-type]
    ready: list[bool] = []

    def notify() -> None:
        with cond:
            ready.append(True)
            cond.notify()

    with cond:
        start(notify)
        assert cond.wait_for(lambda: ready, timeout=WAIT)
        assert cond._is_owned()  # type: ignore[attr-defined]  # Condition's own, over the lock
        assert not cond.wait(0.01)  # a timed wait that nobody notifies gives the lock back to its caller
        assert cond._lock.locked()  # type: ignore[attr-defined]
    assert not cond._lock.locked()  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="^cannot notify on un-acquired lock$"):
        cond.notify()
    wait_for_threads()


def test_locks_are_weakly_referenceable_and_not_subclassable() -> None:
    lock = zthread.allocate_lock()
    died = []
    ref = weakref.ref(lock, lambda r: died.append(r))
    assert ref() is lock
    del lock
    assert died and ref() is None
    with pytest.raises(TypeError, match="is not an acceptable base type"):
        type("Sub", (zthread.LockType,), {})


def test_rlocks_and_their_python_subclasses_are_freed_and_collected() -> None:
    # In the main interpreter an RLock is not tracked by the GC (it references nothing but its type, as a lock);
    # a Python subclass is a GC type of its own, whose instances the collector tracks and frees in cycles.
    import gc

    class WithDict(zthread.RLock):
        me: object

    class WithSlots(zthread.RLock):
        __slots__ = ("owner_name",)
        owner_name: object

    plain, with_dict, with_slots = zthread.RLock(), WithDict(), WithSlots()
    assert gc.is_tracked(plain) is False
    assert gc.is_tracked(with_dict) and gc.is_tracked(with_slots)
    died: list[object] = []
    for r in (plain, with_dict, with_slots):
        with r, r:
            assert r._is_owned() and r._recursion_count() == 2
        assert not r._is_owned()
    with_dict.me = with_dict
    with_slots.owner_name = with_slots
    refs = [weakref.ref(r, died.append) for r in (plain, with_dict, with_slots)]
    del plain, with_dict, with_slots, r
    gc.collect()
    assert len(died) == 3 and all(ref() is None for ref in refs)


# ---- threads ----


def test_start_new_thread_runs_the_call_and_returns_its_ident() -> None:
    got: dict[str, Any] = {}
    done = zthread.allocate_lock()
    done.acquire()

    def run(a: int, b: int = 0) -> None:
        got.update(args=(a, b), ident=zthread.get_ident(), cpython=_thread.get_ident(),
                   native=zthread.get_native_id(), cpython_native=_thread.get_native_id())
        done.release()

    ident = zthread.start_new_thread(run, (1,), {"b": 2})
    assert done.acquire(timeout=WAIT)
    assert got["args"] == (1, 2)
    assert got["ident"] == got["cpython"] == ident != zthread.get_ident()
    assert got["native"] == got["cpython_native"] != zthread.get_native_id()
    wait_for_threads()


# A thread that is still tearing down its thread state while the main thread exits without joining
# it (CPython's test_threading.test_import_from_another_thread). zthread once dropped the GIL before
# deleting the thread state, and the exiting interpreter freed it under the thread: a segfault in
# up to one run in four on 3.13. The window is narrow, so the program runs many times.
EXIT_RACE = """
import zthread
lock = zthread.allocate_lock()
lock.acquire()
def body():
    import threading  # a little work with the GIL after the release below
    lock.release()
zthread.start_new_thread(body, ())
lock.acquire()
"""


def test_a_thread_ending_while_the_interpreter_exits_does_not_crash(tmp_path: Path) -> None:
    # Three at a time: the race shows far more often when the processes compete for the cores.
    for _ in range(50):
        procs = [subprocess.Popen([sys.executable, "-c", EXIT_RACE], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        for proc in procs:
            _, err = proc.communicate(timeout=WAIT)
            assert (proc.returncode, err) == (0, "")


def test_ids_match_cpython_in_the_main_thread() -> None:
    assert zthread.get_ident() == _thread.get_ident()
    assert zthread.get_native_id() == _thread.get_native_id()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_native_id_is_right_in_a_forked_child() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, f"{zthread.get_native_id()} {_thread.get_native_id()}".encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode().split()
    os.close(read)
    os.waitpid(pid, 0)
    assert child[0] == child[1] != str(zthread.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a 1 TiB stack is refused by Linux's overcommit check")
@pytest.mark.parametrize("module", ["zthread", "_thread"])
def test_a_thread_that_cannot_start_leaves_its_handle_done(module: str) -> None:
    # CPython 3.13+ marks the handle done when the OS refuses the thread: a joiner returns, and the handle cannot
    # be started again. zthread does the same on every version.
    if module == "_thread" and sys.version_info < (3, 13):
        pytest.skip("CPython has start_joinable_thread from 3.13")
    m: Any = zthread._zthread if module == "zthread" else _thread
    handle = m._ThreadHandle()
    old = m.stack_size(1 << 40)
    try:
        try:
            m.start_joinable_thread(print, handle=handle)
        except RuntimeError as e:
            assert str(e) == "can't start new thread"
        else:
            handle.join(WAIT)
            pytest.skip("this system gave a thread a 1 TiB stack")
    finally:
        m.stack_size(old)
    assert handle.is_done()
    handle.join(WAIT)
    with pytest.raises(RuntimeError, match="^thread already started$"):
        m.start_joinable_thread(print, handle=handle)


def test_unhandled_exception_goes_to_unraisablehook(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    done = zthread.allocate_lock()
    done.acquire()

    def hook(unraisable: Any) -> None:
        seen.append(unraisable)
        done.release()

    def fail() -> None:
        raise ValueError("task failed")

    monkeypatch.setattr(sys, "unraisablehook", hook)
    start(fail)
    assert done.acquire(timeout=WAIT)
    wait_for_threads()
    (u,) = seen
    assert u.exc_type is ValueError and str(u.exc_value) == "task failed" and u.exc_traceback is not None
    if sys.version_info >= (3, 13):
        assert u.err_msg == f"Exception ignored in thread started by {fail!r}" and u.object is None
    else:
        assert u.err_msg == "Exception ignored in thread started by" and u.object is fail


@pytest.mark.parametrize("module", [_thread, zthread], ids=["cpython", "zthread"])
def test_a_thread_function_whose_repr_raises_is_reported_as_cpython_does(
        monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
    # The hook's err_msg holds repr(function) on 3.13+: the repr runs with the thread's exception set
    # aside (CPython's debug build aborts if Python code runs with an exception set), and when it
    # fails the hook still gets the thread's exception, with err_msg None.
    seen: list[tuple[object, ...]] = []
    done = zthread.allocate_lock()
    done.acquire()

    class Task:
        def __call__(self) -> None:
            raise ValueError("task failed")

        def __repr__(self) -> str:
            raise KeyError("no repr")

    def hook(u: Any) -> None:
        seen.append((u.exc_type, str(u.exc_value), u.err_msg, u.object is task))
        done.release()

    task = Task()
    monkeypatch.setattr(sys, "unraisablehook", hook)
    module.start_new_thread(task, ())
    assert done.acquire(timeout=WAIT)
    wait_for_threads()
    expected_msg = None if sys.version_info >= (3, 13) else "Exception ignored in thread started by"
    assert seen == [(ValueError, "task failed", expected_msg, sys.version_info < (3, 13))]


def test_system_exit_ends_a_thread_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    done = zthread.allocate_lock()
    done.acquire()

    def quit_early() -> None:
        try:
            zthread.exit()
        finally:
            done.release()

    start(quit_early)
    start(lambda: (_ for _ in ()).throw(SystemExit(3)))
    assert done.acquire(timeout=WAIT)
    wait_for_threads()
    assert seen == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the stack with glibc's pthread_getattr_np")
def test_stack_size_applies_to_new_threads() -> None:
    sizes: list[int] = []
    done = zthread.allocate_lock()
    done.acquire()

    def record() -> None:
        sizes.append(stack_size_of_current_thread())
        done.release()

    old = zthread.stack_size(4 * 1024 * 1024)
    try:
        assert zthread.stack_size() == 4 * 1024 * 1024
        start(record)
        assert done.acquire(timeout=WAIT)
    finally:
        assert zthread.stack_size(old) == 4 * 1024 * 1024
    assert sizes[0] >= 4 * 1024 * 1024
    wait_for_threads()


# ---- signals ----

pytestmark_posix = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """Python's own SIGINT handler for the test. A process started with SIGINT ignored (a background job of a
    shell without job control: `cmd &` in a script) keeps it ignored, and CPython then installs no handler:
    the signal, and interrupt_main(), would do nothing there."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


@pytestmark_posix
@pytest.mark.usefixtures("default_sigint")
@pytest.mark.parametrize("timeout", [-1, 30.0])
def test_sigint_interrupts_a_blocked_acquire(timeout: float) -> None:
    lock = zthread.allocate_lock()
    lock.acquire()
    send_soon(signal.SIGINT)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        lock.acquire(timeout=timeout)
    assert time.monotonic() - t0 < 10
    assert lock.locked()  # still held by us, consistent
    assert lock.acquire(False) is False
    lock.release()
    assert lock.acquire(False) is True
    wait_for_threads()


@pytestmark_posix
@pytest.mark.usefixtures("default_sigint")
@needs_hooks
def test_sigint_interrupts_the_condition_hook_that_acquires() -> None:
    """`_acquire_restore` is `acquire()`, interruptible as Condition's fallback (which calls it) is."""
    lock: Any = zthread.allocate_lock()  # the stub has no hooks on 3.12-3.13 (nor, so, on 3.13t)
    lock.acquire()
    done = zthread.allocate_lock()
    done.acquire()

    def bound_the_wait() -> None:  # a lost signal fails the test in WAIT seconds instead of hanging it
        if not done.acquire(timeout=WAIT):
            lock.release()

    start(bound_the_wait)
    send_soon(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        lock._acquire_restore(None)
    done.release()
    assert lock.locked()
    lock.release()
    wait_for_threads()


@pytestmark_posix
@pytest.mark.parametrize("module", [zthread, _thread], ids=["zthread", "_thread"])
def test_a_handler_that_releases_the_lock_lets_the_wait_take_it(module: Any) -> None:
    """A signal handler that runs during a wait and releases the very lock waited for: the wait takes it when
    the handler returns (CPython tries the lock again after running the handlers, before it waits on; nothing
    else would wake the waiter, as the release found nobody parked), not at its deadline."""
    lock = module.allocate_lock()
    lock.acquire()
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: lock.release())
    try:
        send_soon(signal.SIGUSR1, 0.05)
        t0 = time.monotonic()
        assert lock.acquire(timeout=WAIT) is True
        assert time.monotonic() - t0 < WAIT
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert lock.locked()
    lock.release()
    wait_for_threads()


@pytestmark_posix
def test_a_handler_that_does_not_raise_lets_the_wait_go_on() -> None:
    calls: list[int] = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(signum))
    try:
        lock = zthread.allocate_lock()
        lock.acquire()
        send_soon(signal.SIGUSR1, 0.05)
        t0 = time.monotonic()
        # 1 s: the signal, sent 50 ms in by a thread that must first start, arrives within it on a loaded host
        assert lock.acquire(timeout=1.0) is False
        assert time.monotonic() - t0 >= 1.0  # the deadline did not move, nor come early
        assert calls == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, old)
    wait_for_threads()


@pytestmark_posix
@pytest.mark.usefixtures("default_sigint")
def test_interrupt_main_raises_in_the_main_thread() -> None:
    with pytest.raises(KeyboardInterrupt):
        zthread.interrupt_main()
        for _ in range(1000):
            time.sleep(0.001)


def test_the_package_namespace_is_its_api() -> None:
    public = {name for name in dir(zthread) if not name.startswith("_")}
    assert public - {"annotations"} == set(zthread.__all__)  # (from __future__ import annotations)
    assert all(hasattr(zthread, name) for name in zthread.__all__)
