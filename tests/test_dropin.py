"""zthread as `_thread` under `threading`: install(), and `python -m zthread run`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

PROGRAM = textwrap.dedent(
    """
    import sys, _thread, zthread
    assert _thread is zthread._zthread, "not on zthread"
    import threading, concurrent.futures
    assert threading._allocate_lock is zthread._zthread.allocate_lock
    assert threading.get_ident is zthread._zthread.get_ident

    # Thread + Condition: a producer/consumer exchange of 200 items.
    cond = threading.Condition()
    items = []
    def produce():
        for i in range(200):
            with cond:
                items.append(i)
                cond.notify()
    producer = threading.Thread(target=produce, name="producer")
    producer.start()
    seen = []
    with cond:
        while len(seen) < 200:
            assert cond.wait_for(lambda: items, timeout=10)
            seen += items
            items.clear()
    producer.join(timeout=10)
    assert seen == list(range(200)) and not producer.is_alive()

    # Event + Timer.
    event = threading.Event()
    timer = threading.Timer(0.01, event.set)
    timer.start()
    assert event.wait(10)
    timer.join(10)

    # Semaphore: never more than 2 inside.
    sem = threading.BoundedSemaphore(2)
    inside = []
    peak = []
    guard = threading.Lock()
    def bounded():
        with sem:
            with guard:
                inside.append(1)
                peak.append(len(inside))
            with guard:
                inside.pop()
    workers = [threading.Thread(target=bounded) for _ in range(8)]
    for w in workers: w.start()
    for w in workers: w.join(10)
    assert max(peak) <= 2

    # Barrier: 4 parties meet.
    barrier = threading.Barrier(4, timeout=10)
    arrivals = []
    def meet():
        arrivals.append(barrier.wait())
    workers = [threading.Thread(target=meet) for _ in range(3)]
    for w in workers: w.start()
    arrivals.append(barrier.wait())
    for w in workers: w.join(10)
    assert sorted(arrivals) == [0, 1, 2, 3]

    # local: each thread sees its own attribute.
    local = threading.local()
    local.value = "main"
    def set_local():
        assert not hasattr(local, "value")
        local.value = "worker"
    worker = threading.Thread(target=set_local)
    worker.start(); worker.join(10)
    assert local.value == "main" and type(local) is zthread._zthread._local

    # ThreadPoolExecutor.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        assert sum(pool.map(lambda n: n * n, range(100))) == 328350

    assert threading.active_count() == 1, threading.enumerate()
    print("OK", " ".join(sys.argv[1:]))
    """
)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_run_script_uses_zthread_for_threading(tmp_path: Path) -> None:
    (tmp_path / "prog.py").write_text(PROGRAM)
    proc = run("-m", "zthread", "run", "prog.py", "a", "b", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK a b"


def test_run_module_uses_zthread_for_threading(tmp_path: Path) -> None:
    (tmp_path / "progmod.py").write_text(PROGRAM)
    proc = run("-m", "zthread", "run", "-m", "progmod", "x", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "OK x"


def test_run_passes_the_exit_status_on(tmp_path: Path) -> None:
    (tmp_path / "fail.py").write_text("import sys; sys.exit(7)")
    assert run("-m", "zthread", "run", "fail.py", cwd=tmp_path).returncode == 7


def test_install_after_threading_fails_loudly(tmp_path: Path) -> None:
    code = "import threading, zthread\ntry:\n    zthread.install()\nexcept RuntimeError as e:\n    print(e)\n"
    proc = run("-c", code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "must run before 'threading' is imported" in proc.stdout


def test_install_is_idempotent_and_reported(tmp_path: Path) -> None:
    code = "import zthread\nassert not zthread.installed()\nzthread.install()\nzthread.install()\nimport _thread\nassert zthread.installed() and _thread is zthread._zthread\nprint('ok')"
    proc = run("-c", code, cwd=tmp_path)
    assert proc.stdout.strip() == "ok", proc.stderr
