"""zthread: CPython's ``_thread`` API (threads and timed locks) implemented in Zig.

Every name here is the native object itself (no Python wrapper on a hot path). Importing zthread never
imports ``threading``.
"""

try:
    import zthread._zthread  # noqa: F401
except ModuleNotFoundError as e:  # pragma: no cover - only in a source checkout
    if e.name != "zthread._zthread":
        raise
    raise ImportError(
        f"zthread's native module is not built in {__path__[0]}: this is the source folder. "
        "Install zthread (pip install .) and run Python from another folder, or with -I."
    ) from None

from zthread._zthread import (
    LockType as LockType,
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

__all__ = [
    "LockType",
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
