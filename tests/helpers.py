"""What several test modules share (the tests folder is on sys.path: pyproject's pytest `pythonpath`)."""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import time
from collections.abc import Callable
from typing import Any

import zthread

WAIT = 10.0  # every wait in these tests is bounded: a bug fails, it does not hang


def start(function: Callable[..., object], *args: Any) -> None:
    zthread.start_new_thread(function, args)


def let_threads_end(timeout: float = WAIT) -> None:
    """Waits (at most `timeout` seconds) until every thread zthread started has ended."""
    deadline = time.monotonic() + timeout
    while zthread._count() and time.monotonic() < deadline:
        time.sleep(0.005)


def wait_for_threads() -> None:
    let_threads_end()
    assert zthread._count() == 0


def stack_size_of_current_thread() -> int:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.pthread_self.restype = ctypes.c_ulong
    libc.pthread_getattr_np.argtypes = [ctypes.c_ulong, ctypes.c_char_p]
    attr = ctypes.create_string_buffer(128)
    size = ctypes.c_size_t()
    assert libc.pthread_getattr_np(libc.pthread_self(), attr) == 0
    assert libc.pthread_attr_getstacksize(attr, ctypes.byref(size)) == 0
    libc.pthread_attr_destroy(attr)
    return size.value


def send_soon(signum: int, delay: float = 0.1) -> None:
    main = zthread.get_ident()

    def send() -> None:
        time.sleep(delay)
        signal.pthread_kill(main, signum)

    start(send)
