"""zthread.start_thread() and its Handle: what no _thread has (name, per-thread stack size, native id, joinable
handle, non-daemon threads) on every version."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import zthread
from helpers import WAIT, send_soon, stack_size_of_current_thread, wait_for_threads

LINUX = sys.platform.startswith("linux")


def test_runs_the_function_with_its_arguments_and_joins() -> None:
    seen: list[object] = []

    def work(a: int, b: int = 0, *, c: int = 0) -> None:
        time.sleep(0.05)
        seen.append((a, b, c, zthread.get_ident(), zthread.get_native_id()))

    handle = zthread.start_thread(work, [1], {"b": 2, "c": 3})
    assert isinstance(handle, zthread.Handle)
    handle.join(WAIT)
    assert handle.is_done()
    assert seen == [(1, 2, 3, handle.ident, handle.native_id)]
    assert handle.native_id != zthread.get_native_id()
    handle.join()  # joining an ended thread again returns at once
    wait_for_threads()


def test_join_with_a_timeout_returns_no_earlier_and_leaves_the_thread_running() -> None:
    gate = zthread.allocate_lock()
    gate.acquire()
    handle = zthread.start_thread(gate.acquire)
    t0 = time.monotonic()
    handle.join(0.05)
    assert time.monotonic() - t0 >= 0.05
    assert not handle.is_done() and "running" in repr(handle)
    gate.release()
    handle.join(WAIT)
    assert handle.is_done() and "done" in repr(handle)
    wait_for_threads()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_signal_handler_that_raises_interrupts_join() -> None:
    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: object) -> None:
        raise Interrupted

    gate = zthread.allocate_lock()
    gate.acquire()
    handle = zthread.start_thread(gate.acquire)
    old = signal.signal(signal.SIGUSR1, handler)
    try:
        send_soon(signal.SIGUSR1, 0.05)
        with pytest.raises(Interrupted):
            handle.join()
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert not handle.is_done()
    gate.release()
    handle.join(WAIT)
    assert handle.is_done()
    wait_for_threads()


def test_joining_the_current_thread_is_an_error() -> None:
    errors: list[str] = []
    box: list[zthread.Handle] = []
    ready = zthread.allocate_lock()
    ready.acquire()

    def join_self() -> None:
        with ready:
            pass
        try:
            box[0].join()
        except RuntimeError as e:
            errors.append(str(e))

    box.append(zthread.start_thread(join_self))
    ready.release()
    box[0].join(WAIT)
    assert errors == ["Cannot join current thread"]


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_the_name_is_the_os_threads_name() -> None:
    seen: list[str] = []

    def work() -> None:
        seen.append(zthread._zthread._get_name())

    handle = zthread.start_thread(work, name="zthread-worker-7")
    handle.join(WAIT)
    assert handle.name == "zthread-worker-7"
    # Linux keeps 15 bytes of a thread's name (TASK_COMM_LEN 16): what CPython 3.14's set_name keeps too.
    assert seen == ["zthread-worker-"]

    gate = zthread.allocate_lock()
    gate.acquire()
    handle = zthread.start_thread(gate.acquire, name="visible")
    comm = Path(f"/proc/self/task/{handle.native_id}/comm")
    deadline = time.monotonic() + WAIT
    while comm.read_text().strip() != "visible" and time.monotonic() < deadline:
        time.sleep(0.001)  # native_id is known a moment before the name is set
    assert comm.read_text().strip() == "visible"  # what top -H, ps -T and debuggers show
    gate.release()
    handle.join(WAIT)


def test_set_name_and_get_name_are_the_packages_own_on_every_version() -> None:
    # The README's API table: set_name(), _get_name() and _NAME_MAXLEN on every version, from `import zthread`
    # as every other _thread name (not only from zthread._zthread).
    assert zthread.set_name is zthread._zthread.set_name
    assert zthread._get_name is zthread._zthread._get_name
    assert zthread._NAME_MAXLEN == zthread._zthread._NAME_MAXLEN > 0
    assert "set_name" in zthread.__all__
    seen: list[str] = []

    def work() -> None:  # a thread of its own: the test process's main thread keeps its name
        zthread.set_name("worker")
        seen.append(zthread._get_name())
        if LINUX:
            seen.append(Path(f"/proc/self/task/{zthread.get_native_id()}/comm").read_text().strip())

    zthread.start_thread(work).join(WAIT)
    assert seen == (["worker", "worker"] if LINUX else ["worker"])


@pytest.mark.skipif(not LINUX, reason="reads the stack with glibc's pthread_getattr_np")
def test_stack_size_is_the_threads_own_and_leaves_the_default_alone() -> None:
    sizes: list[int] = []
    before = zthread.stack_size()
    handle = zthread.start_thread(lambda: sizes.append(stack_size_of_current_thread()), stack_size=3 * 1024 * 1024)
    handle.join(WAIT)
    assert sizes[0] >= 3 * 1024 * 1024
    assert zthread.stack_size() == before


@pytest.mark.parametrize("size", [-1, 100, 2**70, "big", 1.5])
def test_a_bad_stack_size_is_refused_as_stack_size_refuses_it(size: Any) -> None:
    with pytest.raises(Exception) as expected:
        zthread.stack_size(size)
    with pytest.raises(type(expected.value), match=f"^{expected.value}$".replace("(", r"\(").replace(")", r"\)")):
        zthread.start_thread(print, stack_size=size)
    assert zthread._count() == 0


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="argument 'function' must be callable, not int"):
        zthread.start_thread(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="argument 'name' must be str or None, not bytes"):
        zthread.start_thread(print, name=b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        zthread.start_thread(print, 5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cannot create 'zthread.Handle' instances"):
        zthread.Handle()
    assert zthread._count() == 0


def test_an_exception_in_the_thread_goes_to_unraisablehook(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)

    def fail() -> None:
        raise ValueError("task failed")

    zthread.start_thread(fail).join(WAIT)
    wait_for_threads()
    (u,) = seen
    assert u.exc_type is ValueError and str(u.exc_value) == "task failed"
    if sys.version_info >= (3, 13):
        assert u.err_msg == f"Exception ignored in thread started by {fail!r}"
    else:
        assert repr(u.object) == repr(fail)


NON_DAEMON = """
import sys, time, zthread
assert "threading" not in sys.modules
printed = zthread.allocate_lock()
printed.acquire()
def late():
    printed.acquire()  # after main's line, however late a loaded host runs main
    time.sleep(0.3)
    print("non-daemon finished", flush=True)
def never():
    time.sleep(60)
zthread.start_thread(late, daemon=False)
zthread.start_thread(never)  # a daemon thread: exit does not wait for it
print("main done", flush=True)
printed.release()
"""


def test_the_interpreter_waits_for_non_daemon_threads_only(tmp_path: Path) -> None:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", NON_DAEMON], cwd=tmp_path, capture_output=True, text=True,
                          timeout=WAIT * 3)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.splitlines() == ["main done", "non-daemon finished"]
    assert time.monotonic() - t0 < 30
