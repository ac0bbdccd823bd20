"""zthread: CPython's ``_thread`` API (threads and timed locks) implemented in Zig.

Every name here is the native object itself (no Python wrapper on a hot path). Importing zthread never
imports ``threading``. ``install()`` puts zthread under ``threading``.
"""

import sys

try:
    from zthread import _zthread
except ImportError:  # pragma: no cover - only in a source checkout
    import os

    if any(name.startswith("_zthread.") and not name.endswith(".pyi") for name in os.listdir(__path__[0])):
        raise
    raise ImportError(
        f"zthread's native module is not built in {__path__[0]}: this is the source folder. "
        "Install zthread (pip install .) and run Python from another folder, or with -I."
    ) from None

from zthread._zthread import (
    LockType as LockType,
    RLock as RLock,
    TIMEOUT_MAX as TIMEOUT_MAX,
    _count as _count,
    allocate as allocate,
    allocate_lock as allocate_lock,
    error as error,
    exit as exit,
    exit_thread as exit_thread,
    get_ident as get_ident,
    get_native_id as get_native_id,
    interrupt_main as interrupt_main,
    stack_size as stack_size,
    start_new as start_new,
    start_new_thread as start_new_thread,
)


def install() -> None:
    """Make zthread the ``_thread`` module, so that ``threading`` (and everything built on it) runs on it.

    Must run before ``threading`` is imported: ``threading`` binds ``_thread``'s functions when it is
    imported, so a later swap would leave it half on CPython's ``_thread``. Raises ``RuntimeError`` then.
    Calling it again once installed does nothing.
    """
    if sys.modules.get("_thread") is _zthread:
        return
    if "threading" in sys.modules:
        raise RuntimeError(
            "zthread.install() must run before 'threading' is imported; threading is already imported "
            "and bound to CPython's _thread (use 'python -m zthread run ...' to start a program on zthread)"
        )
    sys.modules["_thread"] = _zthread


def installed() -> bool:
    """Whether ``import _thread`` gives zthread in this process."""
    return sys.modules.get("_thread") is _zthread

__all__ = [
    "LockType",
    "RLock",
    "install",
    "installed",
    "TIMEOUT_MAX",
    "allocate",
    "allocate_lock",
    "error",
    "exit",
    "exit_thread",
    "get_ident",
    "get_native_id",
    "interrupt_main",
    "stack_size",
    "start_new",
    "start_new_thread",
]
