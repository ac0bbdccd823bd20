"""zthread's C ABI (zthread/include/zthread.h, the capsule zthread._zthread._C_API), used by a C extension
(tests/capi/zthread_capi_test.c) built here with `python -m ziglang cc` against the stable ABI (a free-threaded
interpreter's own ABI there)."""

from __future__ import annotations

import _thread
import importlib.util
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import zthread
from helpers import WAIT, wait_for_threads

SOURCE = Path(__file__).parent / "capi" / "zthread_capi_test.c"


def python_include_dirs() -> list[str] | None:
    """Where this interpreter's Python.h is (and Debian's multiarch pyconfig.h), or None."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}{'t' if sysconfig.get_config_var('Py_GIL_DISABLED') else ''}"
    usr = Path(sys.executable).resolve().parent.parent  # an interpreter unpacked from .debs: <root>/usr
    for base in (Path(sysconfig.get_paths()["include"]), usr / "include" / version):
        if (base / "Python.h").exists():
            multiarch = sysconfig.get_config_var("MULTIARCH") or ""
            return [str(base), str(base.parent / multiarch / version), str(base.parent)]
    return None


@pytest.fixture(scope="module")
def ext(tmp_path_factory: pytest.TempPathFactory) -> Any:
    includes = python_include_dirs()
    if includes is None:
        pytest.skip("this interpreter has no Python.h (headers not installed)")
    if importlib.util.find_spec("ziglang") is None:
        pytest.skip("needs ziglang (pip install .[test])")
    out = tmp_path_factory.mktemp("capi") / "zthread_capi_test.so"
    flags = [f"-I{d}" for d in [zthread.get_include(), *includes]]
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        flags.append("-DZTHREAD_TEST_LIMITED_API")
    # -mcpu=baseline: zig cc would otherwise use every feature of this CPU (valgrind knows not all of them).
    proc = subprocess.run([sys.executable, "-m", "ziglang", "cc", "-shared", "-fPIC", "-O2", "-mcpu=baseline", "-Wall",
                           "-Werror", *flags, "-o", str(out), str(SOURCE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    spec = importlib.util.spec_from_file_location("zthread_capi_test", out)  # ".so": an extension module
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_header_is_shipped_and_the_capsule_is_version_1(ext: Any) -> None:
    assert (Path(zthread.get_include()) / "zthread.h").is_file()
    version, size = ext.api_version()
    assert version == 1 and size == 8 + 8 * (8 if sys.maxsize > 2**32 else 4)


def test_c_and_python_use_the_same_locks(ext: Any) -> None:
    lock = ext.new_lock()
    assert type(lock) is zthread.LockType and not lock.locked()
    assert ext.is_lock(lock) and ext.is_lock(zthread.allocate_lock())
    assert not ext.is_lock(_thread.allocate_lock()) and not ext.is_lock(object())
    assert ext.acquire(lock, 0) is True  # C acquires ...
    assert lock.locked() and lock.acquire(False) is False and ext.locked(lock)
    lock.release()  # ... Python releases
    assert not ext.locked(lock)
    assert lock.acquire(False)  # Python acquires ...
    ext.release(lock)  # ... C releases
    assert not lock.locked()
    with pytest.raises(RuntimeError, match="release unlocked lock"):
        ext.release(lock)
    assert not lock.locked()


def test_a_timed_acquire_from_c_waits_without_the_gil(ext: Any) -> None:
    lock = zthread.allocate_lock()
    lock.acquire()
    t0 = time.monotonic()
    assert ext.acquire(lock, 50_000_000) is False
    assert time.monotonic() - t0 >= 0.05
    # A Python thread can run (and release the lock) while C waits: C does not hold the GIL.
    def release_soon() -> None:
        time.sleep(0.05)
        lock.release()

    zthread.start_new_thread(release_soon, ())
    assert ext.acquire(lock, int(WAIT * 1e9)) is True
    lock.release()
    wait_for_threads()


def test_a_native_thread_started_through_the_abi_releases_a_python_lock(ext: Any) -> None:
    lock = zthread.allocate_lock()
    lock.acquire()
    ident = ext.release_later(lock, 30)
    assert ident not in (0, zthread.get_ident())
    assert lock.acquire(timeout=WAIT)
    lock.release()


def test_native_threads_exclude_each_other(ext: Any) -> None:
    lock = zthread.allocate_lock()
    assert ext.count(lock, 4, 20_000) == (80_000, 1)
    assert not lock.locked()


def test_ids_are_pythons(ext: Any) -> None:
    assert ext.ids() == (zthread.get_ident(), zthread.get_native_id())
