"""Hypothesis: every entry point, called with generated arguments, behaves as CPython's `_thread` of the
running version: the same exception type and message, or an equivalent result."""

from __future__ import annotations

import _thread
import math
import gc
import os
import signal
import sys
import weakref
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

# 250 examples a test; tools/memcheck.py asks for fewer (ZTHREAD_FUZZ_EXAMPLES), as valgrind runs each ~30x slower.
FUZZ = settings(max_examples=int(os.environ.get("ZTHREAD_FUZZ_EXAMPLES", "250")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


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


# Fractions of a nanosecond (rounded away from zero: -0.1 ns is -1 ns, refused as negative), and the edges of
# PyTime_t (int64 nanoseconds): each interpreter's own overflow message, whose wording changed
# within 3.11 (3.11.2 and 3.11.7 differ), and the values just inside.
TIMEOUT_EDGES = [-5e-10, -1e-10, 4e-10, -1.5e-9,
                 9223372036.0, 9223372037.0, -9223372037.0, 1e300, -1e300, float(2**63), math.inf, -math.inf,
                 9223372036, 9223372037, -9223372037, 2**63, 2**64, -(2**64), 10**30]


@pytest.mark.parametrize("timeout", TIMEOUT_EDGES, ids=repr)
@pytest.mark.parametrize("make", ["allocate_lock", "RLock"])
@pytest.mark.parametrize("by", ["keyword", "position"])  # two parsers: acquire(True, t) has a path of its own
def test_acquire_at_the_edges_of_the_timeout_range(make: str, timeout: float, by: str) -> None:
    def call(m: ModuleType) -> Any:
        lock = getattr(m, make)()
        result = lock.acquire(timeout=timeout) if by == "keyword" else lock.acquire(True, timeout)
        if result is True:
            lock.release()
        return result

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


# The context-manager methods: `__enter__` takes acquire's arguments until 3.14 and none from 3.15 (a free lock
# never waits); `__exit__` any positional arguments until 3.14 and exactly three from 3.15. The result, the
# message, and whether the lock is held afterwards agree, bound or called through the type. Except where the README
# says the message differs: keywords to `__exit__` before 3.15, whose message names the type or not by the call path.
@FUZZ
@given(make=st.sampled_from(["allocate_lock", "RLock"]), method=st.sampled_from(["__enter__", "__exit__"]),
       through_type=st.booleans(), args=positional, kwargs=keywords)
def test_context_manager_methods(make: str, method: str, through_type: bool, args: list[Any], kwargs: dict[str, Any]) -> None:
    def call(m: ModuleType) -> Any:
        lock = getattr(m, make)()
        held = lock._is_owned if make == "RLock" else lock.locked  # CPython's RLock has locked() from 3.14
        if method == "__exit__":
            lock.acquire()
        try:
            kind, message = outcome(lambda: call_method(lock, method, through_type, args, kwargs))
            if method == "__exit__" and kwargs and sys.version_info < (3, 15):
                message = message.removeprefix(type(lock).__name__ + ".")
            return (kind, message), held()
        finally:
            while held():
                lock.release()

    same(call)


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


# ---- Attribute protocols (get, set, delete) with any name: str, str subclasses, and names that are not str ----
# Every route to the types' getattro/setattro: the builtins (which refuse a name that is not a str themselves),
# the slot wrappers (type(obj).__setattr__ passes any object through) and object's generic ones.


class StrSub(str):
    pass


class StrSubAlwaysEqual(str):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


class StrSubNeverEqual(str):
    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


class StrSubRepr(str):
    def __repr__(self) -> str:
        return f"StrSubRepr({str.__repr__(self)})"


def fails(error: BaseException) -> Callable[..., Any]:
    def call(*_: object) -> Any:
        raise error

    return call


class NoTruth:
    def __bool__(self) -> bool:
        raise ValueError("no truth value")


def name_type(name: str, eq: Callable[[], object], hash_: Callable[[], int] | None,
              repr_: Callable[[], str] | None = None) -> Any:
    """A class of attribute names that are not str: `==` gives eq(), hash() hash_() (None: unhashable), repr()
    repr_() (default: "Name()")."""
    return type(name, (), {
        "__eq__": lambda self, other: eq(),
        "__hash__": None if hash_ is None else lambda self: hash_(),
        "__repr__": lambda self: repr_() if repr_ else f"{name}()",
    })


AlwaysEqual = name_type("AlwaysEqual", lambda: True, lambda: hash("__dict__"))
# CPython 3.10-3.13's own _local misreads this name as a str when it is assigned (3.12/3.13 segfault).
AlwaysEqualUnhashable = name_type("AlwaysEqualUnhashable", lambda: True, None)
NeverEqual = name_type("NeverEqual", lambda: False, lambda: 7)
EqualRaises = name_type("EqualRaises", fails(LookupError("cannot compare")), lambda: 8)
EqualNotBool = name_type("EqualNotBool", NoTruth, lambda: 9)
HashRaises = name_type("HashRaises", lambda: False, fails(ValueError("no hash")))
ReprRaises = name_type("ReprRaises", lambda: True, lambda: 10, fails(RuntimeError("no repr")))


def new_objects(m: ModuleType) -> dict[str, Callable[[], Any]]:
    """What the attribute fuzz runs on, made from module `m`: the lock, RLock, _local, Python subclasses of
    _local (class attributes, a property, __slots__, a name longer than CPython's 50/100-byte cut), the thread
    handle where CPython has one, and the types themselves (immutable, as CPython's)."""

    class Loop(m._local):  # type: ignore[name-defined,misc]
        shared = "class attribute"

        @property
        def prop(self) -> str:
            return "property"

        @prop.setter
        def prop(self, value: object) -> None:
            raise ValueError("prop is set")

        def method(self) -> str:
            return "method"

    class Slotted(m._local):  # type: ignore[name-defined,misc]
        __slots__ = ("slot",)

    Long = type("Long" + "g" * 116, (m._local,), {})
    made: dict[str, Callable[[], Any]] = {
        "lock": m.allocate_lock, "RLock": m.RLock, "_local": m._local, "Loop": Loop, "Slotted": Slotted, "Long": Long,
        "type lock": lambda: m.LockType, "type RLock": lambda: m.RLock, "type _local": lambda: m._local,
    }
    if hasattr(_thread, "_ThreadHandle"):
        made["_ThreadHandle"] = m._ThreadHandle
        made["type _ThreadHandle"] = lambda: m._ThreadHandle
    return made


OBJECTS = {m: new_objects(m) for m in (_thread, zt)}
LOCALS = ("_local", "Loop", "Slotted", "Long")
# zthread has these on every version, CPython only on later ones (README: RLock.locked, _recursion_count, ...).
EXTRA_ATTRIBUTES = {kind: set(dir(OBJECTS[zt][kind]())) - set(dir(make())) for kind, make in OBJECTS[_thread].items()}
ATTRIBUTE_NAMES = sorted({n for make in OBJECTS[_thread].values() for n in dir(make())}
                         | {"__dict__", "__dictoffset__", "__weakref__", "before", "x", "", "slot", "nope"})
texts = st.one_of(st.sampled_from(ATTRIBUTE_NAMES), st.text(max_size=3))
attribute_names = st.one_of(texts, texts.map(StrSub), texts.map(StrSubAlwaysEqual), texts.map(StrSubNeverEqual),
                            texts.map(StrSubRepr))
# Not generated (hypothesis prints every example, and ReprRaises has no repr): each is tried with every call on
# every object.
ODD_NAMES = [AlwaysEqual(), AlwaysEqualUnhashable(), NeverEqual(), EqualRaises(), EqualNotBool(), HashRaises(), ReprRaises(),
             None, b"__dict__", b"x", 5, 1.5, ("__dict__",), object()]


def type_of(obj: Any) -> Any:
    return type(obj)


ATTRIBUTE_CALLS: dict[str, Callable[[Any, Any], Any]] = {
    "getattr": lambda obj, name: getattr(obj, name),
    "type.__getattribute__": lambda obj, name: type_of(obj).__getattribute__(obj, name),
    "object.__getattribute__": lambda obj, name: object.__getattribute__(obj, name),
    "setattr": lambda obj, name: setattr(obj, name, 1),
    "type.__setattr__": lambda obj, name: type_of(obj).__setattr__(obj, name, 1),
    "object.__setattr__": lambda obj, name: object.__setattr__(obj, name, 1),
    "delattr": lambda obj, name: delattr(obj, name),
    "type.__delattr__": lambda obj, name: type_of(obj).__delattr__(obj, name),
    "object.__delattr__": lambda obj, name: object.__delattr__(obj, name),
}


NAME_BY_REPR = (3, 13, 1)
"""From this version CPython's _local shows an attribute name by repr in its `__dict__` error (gh-127190)."""


def cpython_misreads_the_name(kind: str, call: str, name: Any) -> bool:
    """True where CPython 3.10-3.13.0's _local formats the name of a `__dict__` assignment with '%U' although it
    is not a str (it only compares equal to "__dict__"): undefined behaviour there (garbage text on 3.10/3.11,
    a segfault on 3.12/3.13.0), so it is never called; 3.14 and 3.13.1 mended it with %R (gh-127190)."""
    if sys.version_info >= NAME_BY_REPR or kind not in LOCALS or isinstance(name, str):
        return False
    if call not in ("type.__setattr__", "type.__delattr__"):
        return False  # the builtins refuse a name that is not a str; object's refuse a _local before 3.13
    try:
        return bool(name == "__dict__")
    except Exception:
        return False


def known_deviation(kind: str, call: str, name: Any) -> bool:
    """docs/DESIGN.md, "_local: the dict slot": zthread's _local has a dict slot (`_local.__dictoffset__` is not
    0) through which CPython's generic attribute code reaches the calling thread's dict; CPython's _local has
    none, and its subclasses get a per-object dict with a `__dict__` descriptor of their own. Only object's own
    slot functions applied to a local directly can tell: `__dict__` through them on a subclass, and on 3.13+
    (whose object.__setattr__ no longer refuses a _local) setting or deleting anything through them on a local
    that has no per-object dict in CPython."""
    is_dict = isinstance(name, str) and str.__str__(name) == "__dict__"
    if kind == "type _local":
        return isinstance(name, str) and str.__str__(name) == "__dictoffset__" and "getattr" in call.lower()
    if kind not in LOCALS or not call.startswith("object."):
        return False
    if kind in ("Loop", "Long"):
        return is_dict and (call == "object.__getattribute__" or sys.version_info >= (3, 13))
    return sys.version_info >= (3, 13) and call != "object.__getattribute__"


def read_only_dict(obj: Any, name: Any) -> AttributeError:
    """The AttributeError for assigning or deleting `__dict__` of a _local, as CPython of this version raises it:
    the type's name cut at 50 bytes (3.10/3.11) or 100 (3.12+); the attribute's name by repr (3.13.1+) or as its
    text in quotes (3.10-3.13.0). A name that is not a str, which those misread, is shown by repr as 3.14 does."""
    tp_name = "_thread._local" if type(obj) in (_thread._local, zt._local) else type(obj).__name__
    cut = 50 if sys.version_info < (3, 12) else 100
    shown = f"'{str.__str__(name)}'" if sys.version_info < NAME_BY_REPR and isinstance(name, str) else repr(name)
    return AttributeError(f"'{tp_name[:cut]}' object attribute {shown} is read-only")


def raise_(error: BaseException) -> None:
    raise error


def attribute_outcome(m: ModuleType, kind: str, call: str, name: Any) -> tuple[Any, ...]:
    """What the call gives on a fresh object of module `m`, and what the object holds afterwards."""
    obj = OBJECTS[m][kind]()
    local = kind in LOCALS
    if local:
        obj.before = "set before"  # an attribute to find, replace or delete
    if m is _thread and cpython_misreads_the_name(kind, call, name):
        result = outcome(lambda: raise_(read_only_dict(obj, name)))
    else:
        result = outcome(lambda: ATTRIBUTE_CALLS[call](obj, name))
    return result, sorted(map(repr, vars(obj).items())) if local else None


def attribute_mismatch(kind: str, call: str, name: Any) -> tuple[Any, ...] | None:
    """None if zthread does what CPython does (or is exempt: see above), else both outcomes."""
    if isinstance(name, str) and str.__str__(name) in EXTRA_ATTRIBUTES[kind] or known_deviation(kind, call, name):
        return None
    expected = attribute_outcome(_thread, kind, call, name)
    got = attribute_outcome(zt, kind, call, name)
    return None if got == expected else (kind, call, name, got, expected)


@pytest.mark.parametrize("kind", sorted(OBJECTS[_thread]))
@pytest.mark.parametrize("call", sorted(ATTRIBUTE_CALLS))
def test_attribute_protocols_with_every_attribute_name_and_odd_names(kind: str, call: str) -> None:
    # Every name any of CPython's objects has (and a few more), and every name that is not a str.
    names: list[Any] = [*ATTRIBUTE_NAMES, *ODD_NAMES]
    assert [m for m in (attribute_mismatch(kind, call, name) for name in names) if m] == []


@FUZZ
@given(kind=st.sampled_from(sorted(OBJECTS[_thread])), call=st.sampled_from(sorted(ATTRIBUTE_CALLS)), name=attribute_names)
def test_attribute_protocols_with_str_subclasses_and_any_text(kind: str, call: str, name: str) -> None:
    assert attribute_mismatch(kind, call, name) is None


@pytest.mark.parametrize("kind", ["_local", "Loop", "Long"])
@pytest.mark.parametrize("call", ["type.__setattr__", "type.__delattr__"])
@pytest.mark.parametrize("name", [AlwaysEqual(), AlwaysEqualUnhashable(), StrSubAlwaysEqual("x"), "__dict__", StrSubRepr("__dict__")],
                         ids=repr)
def test_dict_of_a_local_is_read_only_whatever_the_name(kind: str, call: str, name: Any) -> None:
    # The case, on every version: a name equal to "__dict__" gets CPython's AttributeError, and the
    # thread's dict stays as it was. Where CPython survives the call, its outcome is compared as well.
    obj = OBJECTS[zt][kind]()
    obj.before = 1
    with pytest.raises(AttributeError) as raised:
        ATTRIBUTE_CALLS[call](obj, name)
    assert str(raised.value) == str(read_only_dict(obj, name))
    assert vars(obj) == {"before": 1}
    if not cpython_misreads_the_name(kind, call, name):
        assert attribute_mismatch(kind, call, name) is None


def test_a_dict_made_by_object_setattr_on_a_local_dies_with_it() -> None:
    # 3.13+ lets object.__setattr__ reach a _local subclass's own per-object dict (CPython's is a real one;
    # zthread's lives in its dict slot): whatever it holds is released with the local, and seen by the GC.
    class Held:
        pass

    for m in (_thread, zt):
        class Loop(m._local):  # type: ignore[name-defined,misc]
            pass

        loop, held = Loop(), Held()
        probe = weakref.ref(held)
        try:
            object.__setattr__(loop, "held", held)
        except TypeError:  # before 3.13: "can't apply this __setattr__ to Loop object"
            assert sys.version_info < (3, 13)
            continue
        held.cycle = loop  # type: ignore[attr-defined]
        assert object.__getattribute__(loop, "held") is held
        del loop, held
        gc.collect()
        assert probe() is None, m
