"""zthread: CPython's ``_thread`` API (threads and timed locks) implemented in Zig.

Every name ``_thread`` has is the native object itself (no Python wrapper on a hot path).
``start_thread()`` and its ``Handle`` are zthread's own: a thread with a name, a stack size and a joinable
handle, on every version. Importing zthread never imports ``threading``. ``install()`` puts zthread under
``threading``.
"""

from __future__ import annotations

import os as _os
import sys as _sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing names only: importing zthread stays cheap
    from collections.abc import Callable, Iterable, Mapping

try:
    from zthread import _zthread
except ImportError:  # pragma: no cover - only in a source checkout
    if any(name.startswith("_zthread.") and not name.endswith(".pyi") for name in _os.listdir(__path__[0])):
        raise
    raise ImportError(
        f"zthread's native module is not built in {__path__[0]}: this is the source folder. "
        "Install zthread (pip install .) and run Python from another folder, or with -I."
    ) from None

from zthread._zthread import (
    LockType as LockType,
    RLock as RLock,
    TIMEOUT_MAX as TIMEOUT_MAX,
    _NAME_MAXLEN as _NAME_MAXLEN,
    _count as _count,
    _get_name as _get_name,
    allocate as allocate,
    allocate_lock as allocate_lock,
    error as error,
    exit as exit,
    exit_thread as exit_thread,
    get_ident as get_ident,
    get_native_id as get_native_id,
    interrupt_main as interrupt_main,
    set_name as set_name,
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
    if _sys.modules.get("_thread") is _zthread:
        return
    if "threading" in _sys.modules:
        raise RuntimeError(
            "zthread.install() must run before 'threading' is imported; threading is already imported "
            "and bound to CPython's _thread (use 'python -m zthread run ...' to start a program on zthread)"
        )
    _sys.modules["_thread"] = _zthread


def installed() -> bool:
    """Whether ``import _thread`` gives zthread in this process."""
    return _sys.modules.get("_thread") is _zthread


class Handle:
    """A thread started by :func:`start_thread`.

    ``join(timeout=None)`` waits for the thread to end (at most ``timeout`` seconds; a signal handler that
    raises interrupts the wait with its exception, Ctrl-C included); ``is_done()`` says whether it has
    ended; ``ident`` is its ``get_ident()``; ``native_id`` its OS thread id (``get_native_id()``).
    """

    __slots__ = ("_handle", "_started", "_native_id", "_name")
    _handle: _zthread._ThreadHandle
    _started: LockType
    _native_id: int | None
    _name: str | None

    def __init__(self) -> None:
        raise TypeError("cannot create 'zthread.Handle' instances: use zthread.start_thread()")

    @property
    def ident(self) -> int:
        """The thread's identifier, as ``get_ident()`` returns it in the thread."""
        return self._handle.ident

    @property
    def native_id(self) -> int:
        """The OS's id of the thread (as ``get_native_id()`` returns it there); waits until it has started."""
        if self._native_id is None:
            with self._started:
                pass
        assert self._native_id is not None
        return self._native_id

    @property
    def name(self) -> str | None:
        """The name given to start_thread(), which the OS shows for the thread (None: none given)."""
        return self._name

    def join(self, timeout: float | None = None) -> None:
        """Wait until the thread ends, or for ``timeout`` seconds (None: no limit). RuntimeError in the thread itself."""
        self._handle.join(timeout)

    def is_done(self) -> bool:
        """Whether the thread has ended."""
        return self._handle.is_done()

    def __repr__(self) -> str:
        state = "done" if self.is_done() else "running"
        return f"<zthread.Handle ident={self.ident} name={self._name!r} {state}>"


class _Bootstrap:
    """What the new thread runs: names itself, reports its native id, then calls the function. Its repr is the
    function's, so an exception that escapes the function is reported as started by the function."""

    __slots__ = ("function", "args", "kwargs", "handle")

    def __init__(self, function: Callable[..., object], args: tuple[object, ...], kwargs: dict[str, object],
                 handle: Handle) -> None:
        self.function, self.args, self.kwargs, self.handle = function, args, kwargs, handle

    def __call__(self) -> None:
        handle = self.handle
        handle._native_id = get_native_id()
        if handle._name is not None:
            set_name(handle._name)
        handle._started.release()
        self.function(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        return repr(self.function)


def get_include() -> str:
    """The folder of ``zthread.h``, the C ABI's header (for ``-I``): native code reaches zthread's locks and
    threads through the capsule ``zthread._zthread._C_API`` it describes."""
    return _os.path.join(_os.path.dirname(__file__), "include")


_shutdown_registered = False


def start_thread(
    function: Callable[..., object],
    args: Iterable[object] = (),
    kwargs: Mapping[str, object] | None = None,
    *,
    name: str | None = None,
    stack_size: int | None = None,
    daemon: bool = True,
) -> Handle:
    """Start a thread running ``function(*args, **kwargs)`` and return its :class:`Handle`.

    ``name``: the thread's OS-level name (what ``top -H``, debuggers and ``/proc/<pid>/task/*/comm`` show),
    set as ``set_name()`` does (cut to the OS's limit, encoded as the OS expects). ``stack_size``: this
    thread's stack in bytes (None: what ``stack_size()`` says; 0: the platform's default; the same limits
    and errors as ``stack_size()``). ``daemon=False``: the interpreter waits for the thread when it exits
    (on every version). An exception escaping ``function`` goes to ``sys.unraisablehook``, as with
    ``start_new_thread``.
    """
    global _shutdown_registered
    if not callable(function):
        raise TypeError(f"start_thread() argument 'function' must be callable, not {type(function).__name__}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"start_thread() argument 'name' must be str or None, not {type(name).__name__}")
    handle = Handle.__new__(Handle)
    handle._name = name
    handle._native_id = None
    handle._started = allocate_lock()
    handle._started.acquire()
    run = _Bootstrap(function, tuple(args), dict(kwargs) if kwargs is not None else {}, handle)
    size = _zthread.stack_size() if stack_size is None else stack_size
    if not daemon and not _shutdown_registered:
        # Joins the non-daemon threads at exit. threading's shutdown (3.13+) joins only its own _thread's
        # threads, and only when threading was imported; atexit handlers run after it, on every version.
        import atexit

        atexit.register(_zthread._shutdown)
        _shutdown_registered = True
    handle._handle = _zthread._start_thread(run, size, daemon)
    return handle


__all__ = [
    "Handle",
    "get_include",
    "start_thread",
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
    "set_name",
    "stack_size",
    "start_new",
    "start_new_thread",
]

del TYPE_CHECKING  # not API: dir(zthread) lists the API (and private names)
