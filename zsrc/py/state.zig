//! Per-module state: everything zthread keeps for one import of `_zthread`, so for one interpreter. Each
//! interpreter (the main one, and every subinterpreter, which from 3.12 may have a GIL of its own) gets its
//! own types, interned names, thread registry and C ABI table; no Python object is shared between two
//! interpreters, and no process-global `PyObject*` exists (docs/DESIGN.md, "Per-interpreter state").
//!
//! How code finds its state:
//! - module functions get the module as `self`: `of(module)`;
//! - methods and slots of a type that cannot be subclassed (lock, _ThreadHandle): the type was made by
//!   `PyType_FromModuleAndSpec`, so `PyType_GetModuleState(Py_TYPE(self))` (stable ABI from 3.10);
//! - slots of a subclassable type (RLock, _local), whose `Py_TYPE(self)` may be a Python subclass that knows
//!   no module: `ofSubclass` walks `tp_base` up to zthread's own type, as `PyType_GetModuleByDef` does, which
//!   is in the limited API only from 3.13. `tp_base` is the right chain to walk: zthread's types have an
//!   instance layout of their own, so every subclass has them on its `tp_base` chain (CPython refuses a class
//!   whose bases' layouts conflict). `_local`, whose every attribute access needs its state, walks once, in
//!   `tp_new`, and keeps the pointer in the instance: the instance holds its type, the type its bases, and
//!   zthread's type its module, so the state outlives every instance.
const std = @import("std");
const abi = @import("abi.zig");
const args = @import("args.zig");
const capi = @import("capi.zig");
const handles = @import("handles.zig");

const Object = abi.Object;

pub const State = struct {
    /// Types, visited and cleared with the module: they need the garbage collector to be freed (a heap type
    /// refers to itself through its MRO), and those made by `PyType_FromModuleAndSpec` also hold the module.
    /// A reference to a type dropped only when the module is freed could come after the interpreter's last
    /// collection, and leak the type (and with it, in a closed subinterpreter, its memory arenas).
    lock_type: ?*Object = null,
    handle_type: ?*Object = null,
    /// `_local`'s per-thread registry type, made by `PyType_FromSpec` (it needs no state). A `_local` that
    /// can still make a registry holds the module, which then cannot have been cleared.
    local_registry_type: ?*Object = null,
    /// Strings made in this interpreter, as every object here is (two interpreters with their own GILs must
    /// not share an object that is not immortal: reference counts are not atomic).
    keywords: args.Keywords = .{},
    local_registry_key: ?*Object = null,
    dict_name: ?*Object = null,
    /// `object.__init__`, compared with a `_local` subclass's `__init__`.
    object_init: ?*anyopaque = null,
    /// sys.unraisablehook's argument type, learnt the first time a thread's exception is reported.
    unraisable_args_type: ?*Object = null,
    /// The threads this module started, `_count()` and `_shutdown()`'s view (shared with their handles).
    threads: ?*handles.Registry = null,
    /// `stack_size()`: the size for new threads, 0 for the platform's default (per interpreter, as CPython).
    stack_size_bytes: std.atomic.Value(usize) = .init(0),
    /// False in a subinterpreter configured without threads (3.13+: read from `_interpreters`).
    threads_allowed: bool = true,
    /// Whether this module's locks, handles and registries are tracked by the GC (abi.instanceSpec: in a
    /// subinterpreter, not in the main interpreter).
    tracked: bool = false,
    /// The C ABI's function table; the capsule `_C_API` points here.
    capi: capi.Api = undefined,

    /// The references to types (visited by traverse, cleared by clear).
    pub const types = .{ "lock_type", "handle_type", "local_registry_type" };
    /// The other references (objects the garbage collector does not track), dropped when the module is freed.
    pub const owned = .{ "local_registry_key", "dict_name", "unraisable_args_type" };
};

pub inline fn of(module: *Object) *State {
    return @ptrCast(@alignCast(abi.PyModule_GetState(module).?));
}

/// The state of the module that made `tp` (a type of this module, not a subclass).
pub inline fn ofType(tp: *abi.TypeObject) *State {
    return @ptrCast(@alignCast(abi.PyType_GetModuleState(tp).?));
}

/// The state of the module whose type (the one `isOwnType` recognises) `tp` is or derives from.
pub fn ofSubclass(tp: *abi.TypeObject, comptime isOwnType: fn (*abi.TypeObject) bool) *State {
    var t = tp;
    while (!isOwnType(t)) {
        // Every instance's type derives from zthread's: the walk ends there.
        t = @ptrCast(abi.PyType_GetSlot(t, abi.Py_tp_base).?);
    }
    return ofType(t);
}

/// This module's lock type, or null with an exception set once the module has been cleared (interpreter
/// shutdown: code run by finalizers may still call).
pub fn lockType(s: *const State) ?*abi.TypeObject {
    return @ptrCast(s.lock_type orelse return cleared(*abi.TypeObject));
}

pub fn handleType(s: *const State) ?*abi.TypeObject {
    return @ptrCast(s.handle_type orelse return cleared(*abi.TypeObject));
}

/// The module's thread registry, or null with an exception set if the module was never initialised.
pub fn threadRegistry(s: *State) ?*handles.Registry {
    return s.threads orelse return cleared(*handles.Registry);
}

fn cleared(comptime T: type) ?T {
    abi.PyErr_SetString(abi.PyExc_RuntimeError, "zthread's module state is gone (interpreter shutdown)");
    return null;
}
