//! `_thread.lock` (LockType): a Python object around the core's binary-semaphore Lock.
//!
//! The type's tp_name is `_thread.lock`, like CPython's, so reprs and every message CPython's own machinery
//! builds from it ("lock.release() takes no arguments", "cannot pickle '_thread.lock' object") are the same.
const std = @import("std");
const core = @import("core");
const abi = @import("abi.zig");
const args = @import("args.zig");
const state = @import("state.zig");
const version = @import("version.zig");
const wait = @import("wait.zig");

const Object = abi.Object;

/// A lock's fields, after its object header (abi.data).
pub const LockObject = extern struct {
    lock: core.Lock,
    weakreflist: ?*Object,
};

inline fn cast(o: *Object) *LockObject {
    return abi.data(LockObject, o);
}

/// The core lock inside a lock object (for `_set_sentinel`, released by the thread machinery).
pub fn coreLock(o: *Object) *core.Lock {
    return &cast(o).lock;
}

/// Whether `o` is a lock of this module's type, made by any interpreter's import of it (they share `dealloc`).
pub fn isLock(o: *Object) bool {
    return abi.isInstanceType(abi.typeOf(o), dealloc);
}

/// A new unlocked lock (`allocate_lock()`) of `s`'s lock type.
pub fn newLock(s: *const state.State) ?*Object {
    const tp = state.lockType(s) orelse return null;
    const o = abi.newInstance(tp, s.tracked) orelse return null;
    const self = cast(o);
    self.lock = .{};
    self.weakreflist = null;
    return o;
}

/// tp_dealloc of the type's variant whose locks are `tracked` by the GC or not (abi.instanceSpec).
fn dealloc(comptime tracked: bool) fn (*Object) callconv(.c) void {
    return struct {
        fn dealloc(o: *Object) callconv(.c) void {
            const self = cast(o);
            if (self.weakreflist != null) abi.PyObject_ClearWeakRefs(o);
            abi.freeInstance(o, tracked);
        }
    }.dealloc;
}

/// `lock()` from 3.13, where `threading.Lock` is this type; before, the type is not instantiable.
fn new(tp: *abi.TypeObject, tuple: *Object, kwargs: ?*Object) callconv(.c) ?*Object {
    if (kwargs) |kw| if (abi.PyDict_Size(kw) != 0) return args.noKeywords("lock");
    const n = abi.PyTuple_Size(tuple);
    if (n != 0) {
        if (version.atLeast(15)) {
            abi.PyErr_SetString(abi.PyExc_TypeError, "lock() takes no positional arguments");
        } else {
            _ = abi.PyErr_Format(abi.PyExc_TypeError, "lock expected 0 arguments, got %zd", n);
        }
        return null;
    }
    return newLock(state.ofType(tp));
}

fn acquire(o: *Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    return acquireNamed("acquire", o, argv, nargs, kwnames);
}

/// `acquire_lock`: an alias, whose messages say "acquire_lock()" from 3.15 (argument clinic).
fn acquireLock(o: *Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    return acquireNamed(if (version.atLeast(15)) "acquire_lock" else "acquire", o, argv, nargs, kwnames);
}

/// `__enter__` until 3.14: acquire's arguments.
fn enter(o: *Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    return acquireNamed("acquire", o, argv, nargs, kwnames);
}

/// 3.15+ `__enter__()` (METH_NOARGS, as CPython's: the interpreter checks the arguments).
fn enterNoArgs(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    return acquireNamed("acquire", o, undefined, 0, null);
}

/// The calls that do not wait, with no stack frame: acquire(), acquire(True) and acquire(False) on a free
/// lock, acquire(False) on a held one. Everything else (arguments to convert, a wait) is `acquireSlow`'s.
inline fn acquireNamed(fname: [*:0]const u8, o: *Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) ?*Object {
    const self = cast(o);
    if (kwnames == null) {
        if (nargs == 0 or (nargs == 1 and argv[0] == abi.trueObject())) {
            if (self.lock.tryAcquire()) return abi.boolean(true);
        } else if (nargs == 1 and argv[0] == abi.falseObject()) {
            return abi.boolean(self.lock.tryAcquireIfFree());
        }
    }
    return acquireSlow(fname, self, argv, nargs, kwnames);
}

/// What `acquireNamed` did not finish: a wait after its try failed, or an argument to convert.
noinline fn acquireSlow(fname: [*:0]const u8, self: *LockObject, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) ?*Object {
    const timeout_ns: i64 = if (kwnames == null and nargs <= 1) timeout: {
        // acquire() / acquire(blocking): no timeout to convert or check
        const blocking = if (nargs == 0) true else args.toBlocking(argv[0]) orelse return null;
        break :timeout if (blocking) -1 else 0;
    } else timeout: {
        const keywords = if (kwnames == null) null else &state.ofType(abi.typeOf(abi.object(self))).keywords;
        break :timeout (args.parseAcquireNamed(keywords, fname, argv, nargs, kwnames) orelse return null).timeout_ns;
    };
    const acquired = wait.acquire(&self.lock, timeout_ns) orelse return null;
    return abi.boolean(acquired);
}

fn release(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    cast(o).lock.release() catch return releaseError();
    return abi.none();
}

/// `__exit__(*exc_info)` until 3.14: any positional arguments, no keywords (CPython's METH_VARARGS method,
/// whose keyword message names the type from 3.11 on), without building an argument tuple on every `with`.
fn exit(o: *Object, _: [*]const *Object, _: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    if (args.keywordCount(kwnames) != 0) return args.noKeywords(if (version.atLeast(11)) "lock.__exit__" else "__exit__");
    return release(o, null);
}

/// 3.15+ `__exit__(exc_type, exc_value, exc_tb, /)` (METH_FASTCALL, as CPython's).
fn exitPositional(o: *Object, _: [*]const *Object, nargs: isize) callconv(.c) ?*Object {
    if (nargs != 3) return args.exitArgumentCount(nargs);
    return release(o, null);
}

noinline fn releaseError() ?*Object {
    abi.PyErr_SetString(abi.PyExc_RuntimeError, "release unlocked lock");
    return null;
}

fn locked(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    return abi.boolean(cast(o).lock.isLocked());
}

/// `_acquire_restore(state, /)`: `acquire()` (blocking, interruptible as it is), its argument ignored, None
/// returned: what `threading.Condition`'s own `_acquire_restore` does for a lock without the method.
fn acquireRestore(o: *Object, _: *Object) callconv(.c) ?*Object {
    _ = wait.acquire(&cast(o).lock, -1) orelse return null;
    return abi.none();
}

fn atForkReinit(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    cast(o).lock.resetAfterFork();
    return abi.none();
}

fn repr(o: *Object) callconv(.c) ?*Object {
    const held: [*:0]const u8 = if (cast(o).lock.isLocked()) "locked" else "unlocked";
    return abi.PyUnicode_FromFormat("<%s %s object at %p>", held, spec_name, o);
}

const fastcall_kw = abi.METH_FASTCALL | abi.METH_KEYWORDS;
const acquire_doc =
    \\acquire($self, /, blocking=True, timeout=-1)
    \\--
    \\
    \\Lock the lock.  Without argument, this blocks if the lock is already
    \\locked (even by the same thread), waiting for another thread to release
    \\the lock, and return True once the lock is acquired.
    \\With an argument, this will only block if the argument is true,
    \\and the return value reflects whether the lock is acquired.
    \\The blocking operation is interruptible.
;
const release_doc =
    \\release($self, /)
    \\--
    \\
    \\Release the lock, allowing another thread that is blocked waiting for
    \\the lock to acquire the lock.  The lock must be in the locked state,
    \\but it needn't be locked by the same thread that unlocks it.
;
const locked_doc =
    \\locked($self, /)
    \\--
    \\
    \\Return whether the lock is in the locked state.
;

const shared_methods = [_]abi.MethodDef{
    .{ .ml_name = "acquire_lock", .ml_meth = @ptrCast(&acquireLock), .ml_flags = fastcall_kw, .ml_doc = "acquire_lock($self, /, blocking=True, timeout=-1)\n--\n\nAn obsolete synonym of acquire()." },
    .{ .ml_name = "acquire", .ml_meth = @ptrCast(&acquire), .ml_flags = fastcall_kw, .ml_doc = acquire_doc },
    args.noArgsMethod("lock", "release_lock", release, "release_lock($self, /)\n--\n\nAn obsolete synonym of release()."),
    args.noArgsMethod("lock", "release", release, release_doc),
    args.noArgsMethod("lock", "locked_lock", locked, "locked_lock($self, /)\n--\n\nAn obsolete synonym of locked()."),
    args.noArgsMethod("lock", "locked", locked, locked_doc),
    args.noArgsMethod("lock", "_at_fork_reinit", atForkReinit, "_at_fork_reinit($self, /)\n--\n\n"),
};

/// Two of threading.Condition's three hooks, which CPython's lock lacks: a Condition over a lock without them
/// runs Python fallbacks of its own, a frame per call of `wait`. Each does what its fallback does (and what
/// code outside threading that probes for them does when they are missing), without the frame. Not the third,
/// `_is_owned`: code tells an RLock from a lock by it, and reads it as "owned by this thread", which a lock
/// cannot answer. Not where the interpreter runs the fallbacks cheaply (`version.cheapPythonCalls`: 3.12 and
/// 3.13 with the GIL): there a Condition, which looks each hook up twice (`hasattr`, then the attribute) and
/// keeps it as a bound method, pays more instructions to make one than the hooks save in several waits
/// (docs/DESIGN.md, "Condition's hooks on the lock").
const condition_hooks = [_]abi.MethodDef{
    args.noArgsMethod("lock", "_release_save", release, "_release_save($self, /)\n--\n\nFor internal use by `threading.Condition`: release()."),
    .{ .ml_name = "_acquire_restore", .ml_meth = @ptrCast(&acquireRestore), .ml_flags = abi.METH_O, .ml_doc = "_acquire_restore($self, state, /)\n--\n\nFor internal use by `threading.Condition`: acquire(), state ignored." },
};

/// Until 3.14 `__enter__` takes acquire's arguments and `__exit__` any positional ones; from 3.15 they are
/// CPython's METH_NOARGS and METH_FASTCALL methods (the interpreter's checks and messages, and its cheapest
/// calls from a `with` statement).
const context_until_3_14 = [_]abi.MethodDef{
    .{ .ml_name = "__enter__", .ml_meth = @ptrCast(&enter), .ml_flags = fastcall_kw, .ml_doc = "__enter__($self, /, blocking=True, timeout=-1)\n--\n\nLock the lock." },
    .{ .ml_name = "__exit__", .ml_meth = @ptrCast(&exit), .ml_flags = fastcall_kw, .ml_doc = "__exit__($self, /, *exc_info)\n--\n\nRelease the lock." },
};
const context_from_3_15 = [_]abi.MethodDef{
    .{ .ml_name = "__enter__", .ml_meth = @ptrCast(&enterNoArgs), .ml_flags = abi.METH_NOARGS, .ml_doc = "__enter__($self, /)\n--\n\nLock the lock." },
    .{ .ml_name = "__exit__", .ml_meth = @ptrCast(&exitPositional), .ml_flags = abi.METH_FASTCALL, .ml_doc = "__exit__($self, exc_type, exc_value, exc_tb, /)\n--\n\nRelease the lock." },
};

var methods_hooks_until_3_14 = shared_methods ++ condition_hooks ++ context_until_3_14 ++ [_]abi.MethodDef{abi.sentinel_method};
var methods_without_hooks = shared_methods ++ context_until_3_14 ++ [_]abi.MethodDef{abi.sentinel_method};
var methods_from_3_15 = shared_methods ++ condition_hooks ++ context_from_3_15 ++ [_]abi.MethodDef{abi.sentinel_method};

var members = [_]abi.MemberDef{
    abi.offsetMember("__weaklistoffset__", LockObject, "weakreflist"),
    .{ .name = null, .type = 0, .offset = 0, .flags = 0, .doc = null },
};

const lock_doc =
    \\A lock object is a synchronization primitive.  To create a lock,
    \\call threading.Lock().  Methods are:
    \\
    \\acquire() -- lock the lock, possibly blocking until it can be obtained
    \\release() -- unlock of the lock
    \\locked() -- test whether the lock is currently locked
    \\
    \\A lock is not owned by the thread that locked it; another thread may
    \\unlock it.  A thread attempting to lock a lock that it has already locked
    \\will block until another thread unlocks it.  Deadlocks may ensue.
;

/// The type's slots, with `methods`; `tp_new` from 3.13, where `lock()` makes a lock (`threading.Lock` is this
/// type); before, the type cannot be instantiated from Python (`threading.Lock` is a function).
fn slots(comptime methods: anytype, comptime instantiable: bool) []const abi.TypeSlot {
    const common = [_]abi.TypeSlot{
        .{ .slot = abi.Py_tp_repr, .pfunc = @ptrCast(&repr) },
        .{ .slot = abi.Py_tp_methods, .pfunc = @ptrCast(methods) },
        .{ .slot = abi.Py_tp_members, .pfunc = @ptrCast(&members) },
        .{ .slot = abi.Py_tp_doc, .pfunc = lock_doc },
    };
    const all = if (instantiable) common ++ [_]abi.TypeSlot{.{ .slot = abi.Py_tp_new, .pfunc = @ptrCast(&new) }} else common;
    return &all;
}
const spec_name = "_thread.lock";
const flags = abi.Py_TPFLAGS_DEFAULT | abi.Py_TPFLAGS_IMMUTABLETYPE;
const flags_until_3_12 = flags | abi.Py_TPFLAGS_DISALLOW_INSTANTIATION;

/// The specs of 3.10-3.11, 3.12, 3.13 with the GIL, 3.13 without it and 3.14, and 3.15+, for locks the GC does
/// not track, and for tracked ones.
fn eraSpecs(comptime tracked: bool) [5]abi.TypeSpec {
    return .{
        abi.instanceSpec(spec_name, LockObject, flags_until_3_12, dealloc, slots(&methods_hooks_until_3_14, false), tracked),
        abi.instanceSpec(spec_name, LockObject, flags_until_3_12, dealloc, slots(&methods_without_hooks, false), tracked),
        abi.instanceSpec(spec_name, LockObject, flags, dealloc, slots(&methods_without_hooks, true), tracked),
        abi.instanceSpec(spec_name, LockObject, flags, dealloc, slots(&methods_hooks_until_3_14, true), tracked),
        abi.instanceSpec(spec_name, LockObject, flags, dealloc, slots(&methods_from_3_15, true), tracked),
    };
}
const specs = [2][5]abi.TypeSpec{ eraSpecs(false), eraSpecs(true) };

/// Creates LockType for `module` (its state is found from the type); its locks are `tracked` by the GC or not
/// (abi.instanceSpec). Not subclassable (no BASETYPE) on any version; instantiable from Python only from
/// 3.13, as in CPython. Nothing here is written: every interpreter may create its type at the same time.
pub fn createType(module: *Object, tracked: bool) ?*Object {
    const hooks = !version.cheapPythonCalls();
    const era: usize = if (version.atLeast(15)) 4 else if (version.atLeast(13)) (if (hooks) 3 else 2) else if (hooks) 0 else 1;
    return abi.PyType_FromModuleAndSpec(module, &specs[@intFromBool(tracked)][era], null);
}
