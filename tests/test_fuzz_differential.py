"""Hypothesis: every entry point, called with generated arguments, behaves as CPython's `_thread` of the
running version: the same exception type and message, or an equivalent result."""

from __future__ import annotations

import _thread
import math
import signal
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import zthread._zthread as zt


class IntSub(int):
    pass


class FloatSub(float):
    pass


class Index:
    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return f"Index({self.value})"


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 32767, 32768]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 0.5, -0.5, -1.0, -1.0000000001, 1e-9, 1e100, -1e100, 9223372036.0, 9223372037.0]),
    st.text(max_size=3),
    st.binary(max_size=3),
    st.integers(min_value=-(2**40), max_value=2**40).map(IntSub),
    st.floats(allow_nan=True).map(FloatSub),
    st.integers(min_value=-5, max_value=2**40).map(Index),
    st.just(object()),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.lists(scalars, max_size=3).map(tuple), st.dictionaries(st.text(max_size=2), scalars, max_size=2))
positional = st.lists(values, max_size=4)
keywords = st.dictionaries(st.sampled_from(["blocking", "timeout", "foo", "size", "signum", "function", "args", "kwargs", "name"]), values, max_size=3)

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(call: Callable[[], Any]) -> tuple[str, str]:
    try:
        result = call()
    except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are outcomes here too
        return (type(e).__name__, str(e))
    if isinstance(result, float) and math.isnan(result):
        return ("result", "nan")
    return ("result", repr(result) if isinstance(result, (bool, int, float, str, type(None), tuple)) else type(result).__name__)


def same(call: Callable[[ModuleType], Any]) -> None:
    expected = outcome(lambda: call(_thread))
    got = outcome(lambda: call(zt))
    assert got == expected


def release_if_held(lock: Any) -> None:
    if lock.locked():
        lock.release()


@FUZZ
@given(args=positional, kwargs=keywords)
def test_lock_acquire(args: list[Any], kwargs: dict[str, Any]) -> None:
    # A fresh lock is free: whatever the arguments, acquire never waits.
    def call(m: ModuleType) -> Any:
        lock = m.allocate_lock()
        try:
            return lock.acquire(*args, **kwargs)
        finally:
            release_if_held(lock)

    same(call)


@FUZZ
@given(args=positional, kwargs=keywords)
def test_rlock_acquire(args: list[Any], kwargs: dict[str, Any]) -> None:
    def call(m: ModuleType) -> Any:
        rlock = m.RLock()
        result = rlock.acquire(*args, **kwargs)
        if result is True:
            rlock.release()
        return result

    same(call)


@FUZZ
@given(arg=values)
def test_rlock_acquire_restore(arg: Any) -> None:
    def call(m: ModuleType) -> Any:
        rlock = m.RLock()
        rlock._acquire_restore(arg)
        return rlock._release_save()

    same(call)


@FUZZ
@given(args=positional, kwargs=keywords)
def test_stack_size(args: list[Any], kwargs: dict[str, Any]) -> None:
    def call(m: ModuleType) -> Any:
        try:
            return m.stack_size(*args, **kwargs)
        finally:
            m.stack_size(0)

    same(call)


@FUZZ
@given(args=positional, kwargs=keywords)
def test_start_new_thread_rejects_what_cpython_rejects(args: list[Any], kwargs: dict[str, Any]) -> None:
    # Generated values are never callable, so no thread ever starts.
    same(lambda m: m.start_new_thread(*args, **kwargs))


def valid_signal(args: list[Any]) -> bool:
    if len(args) != 1:
        return False
    try:
        signum = int(args[0].__index__())
    except (AttributeError, TypeError, ValueError, OverflowError):
        return False
    return 0 < signum < signal.NSIG


@FUZZ
@given(args=positional, kwargs=keywords)
def test_interrupt_main_rejects_what_cpython_rejects(args: list[Any], kwargs: dict[str, Any]) -> None:
    assume(kwargs or not valid_signal(args))  # never simulate a real signal here
    assume(args or kwargs)
    same(lambda m: m.interrupt_main(*args, **kwargs))


def in_both(names: list[str], make: Callable[[ModuleType], Any]) -> list[str]:
    """The names that CPython's object of this version has (zthread must have them too)."""
    have = [n for n in names if hasattr(make(_thread), n)]
    assert all(hasattr(make(zt), n) for n in have)
    return have


# Every function and method without arguments (zthread's are METH_FASTCALL: they give the messages
# CPython's METH_NOARGS ones give, bound or called through the type).
NO_ARGUMENT_FUNCTIONS = in_both(["exit", "exit_thread", "allocate_lock", "allocate", "get_ident", "get_native_id", "_count",
                                 "_get_main_thread_ident", "_is_main_interpreter", "_get_name", "daemon_threads_allowed",
                                 "_shutdown", "_set_sentinel"], lambda m: m)
LOCK_METHODS = in_both(["release", "locked", "_at_fork_reinit", "release_lock", "locked_lock"], lambda m: m.allocate_lock())
RLOCK_METHODS = in_both(["release", "locked", "_is_owned", "_recursion_count", "_release_save", "_at_fork_reinit"], lambda m: m.RLock())
HANDLE_METHODS = in_both(["is_done", "_set_done"], lambda m: m._ThreadHandle()) if hasattr(_thread, "_ThreadHandle") else []


@FUZZ
@given(name=st.sampled_from(NO_ARGUMENT_FUNCTIONS), args=positional, kwargs=keywords)
def test_no_argument_functions(name: str, args: list[Any], kwargs: dict[str, Any]) -> None:
    assume(args or kwargs)
    same(lambda m: getattr(m, name)(*args, **kwargs))


def call_method(obj: Any, name: str, through_type: bool, args: list[Any], kwargs: dict[str, Any]) -> Any:
    if through_type:
        return getattr(type(obj), name)(obj, *args, **kwargs)
    return getattr(obj, name)(*args, **kwargs)


@FUZZ
@given(method=st.sampled_from(LOCK_METHODS), through_type=st.booleans(), args=positional, kwargs=keywords)
def test_lock_methods_without_arguments(method: str, through_type: bool, args: list[Any], kwargs: dict[str, Any]) -> None:
    assume(args or kwargs)
    same(lambda m: call_method(m.allocate_lock(), method, through_type, args, kwargs))


@FUZZ
@given(method=st.sampled_from(RLOCK_METHODS), through_type=st.booleans(), args=positional, kwargs=keywords)
def test_rlock_methods_without_arguments(method: str, through_type: bool, args: list[Any], kwargs: dict[str, Any]) -> None:
    assume(args or kwargs)
    same(lambda m: call_method(m.RLock(), method, through_type, args, kwargs))


@pytest.mark.skipif(not HANDLE_METHODS, reason="CPython has no _ThreadHandle before 3.13")
@FUZZ
@given(method=st.sampled_from(HANDLE_METHODS or ["is_done"]), through_type=st.booleans(), args=positional, kwargs=keywords)
def test_handle_methods_without_arguments(method: str, through_type: bool, args: list[Any], kwargs: dict[str, Any]) -> None:
    assume(args or kwargs)
    same(lambda m: call_method(m._ThreadHandle(), method, through_type, args, kwargs))


@pytest.mark.skipif(not hasattr(_thread, "_ThreadHandle"), reason="CPython has no _ThreadHandle before 3.13")
@FUZZ
@given(args=positional, kwargs=keywords)
def test_unstarted_handle_join(args: list[Any], kwargs: dict[str, Any]) -> None:
    same(lambda m: m._ThreadHandle().join(*args, **kwargs))


@pytest.mark.skipif(not hasattr(_thread, "_make_thread_handle"), reason="CPython has no _make_thread_handle before 3.13")
@FUZZ
@given(arg=values)
def test_make_thread_handle(arg: Any) -> None:
    same(lambda m: m._make_thread_handle(arg).ident)


@pytest.mark.skipif(not hasattr(_thread, "set_name"), reason="CPython has no set_name before 3.14")
@FUZZ
@given(args=positional, kwargs=keywords)
def test_set_name(args: list[Any], kwargs: dict[str, Any]) -> None:
    def call(m: ModuleType) -> Any:
        before = m._get_name()
        try:
            m.set_name(*args, **kwargs)
            return m._get_name()
        finally:
            m.set_name(before)

    same(call)
