//! `_thread.RLock`: a reentrant lock owned by the thread that acquired it, over the core's RecursiveLock.
//! Subclassable, like CPython's; every blocking wait releases the GIL.
const std = @import("std");
const core = @import("core");
const abi = @import("abi.zig");
const args = @import("args.zig");
const state = @import("state.zig");
const version = @import("version.zig");
const wait = @import("wait.zig");

const Object = abi.Object;

/// An RLock's fields, after its object header (abi.data).
pub const RLockObject = extern struct {
    rlock: core.RecursiveLock,
    weakreflist: ?*Object,
};

inline fn cast(o: *Object) *RLockObject {
    return abi.data(RLockObject, o);
}

inline fn currentIdent() u64 {
    return core.thread.currentIdent();
}

/// `RLock(*args, **kwargs)`: arguments are accepted and ignored, as in CPython 3.10-3.14; 3.15 refuses
/// them for RLock itself (gh-102029), not for subclasses (which may have an `__init__` of their own).
fn new(tp: *abi.TypeObject, init_args: *Object, init_kwargs: ?*Object) callconv(.c) ?*Object {
    const kind = abi.instanceKind(tp, dealloc); // `other`: a Python subclass
    if (version.atLeast(15) and kind != .other) {
        if (abi.PyTuple_Size(init_args) != 0) {
            abi.PyErr_SetString(abi.PyExc_TypeError, "RLock() takes no positional arguments");
            return null;
        }
        if (init_kwargs) |kw| if (abi.PyDict_Size(kw) != 0) return args.noKeywords("RLock");
    }
    // RLock itself: allocated as a lock is (no slot lookup, no zero-filling); a Python subclass may add a
    // __dict__ or slots, which its tp_alloc sizes and zero-fills.
    const o = switch (kind) {
        .untracked, .tracked => abi.newInstance(tp, kind == .tracked),
        .other => abi.allocViaSlot(tp),
    } orelse return null;
    const self = cast(o);
    self.rlock = .{};
    self.weakreflist = null;
    return o;
}

/// tp_dealloc of the type's variant whose instances are `tracked` by the GC or not (abi.instanceSpec: tracked
/// in a subinterpreter, untracked in the main interpreter, as the lock's). A Python subclass's instances are
/// tracked either way (every class statement makes a GC type, whose tp_alloc and tp_free `allocViaSlot` and
/// `freeViaSlot` use): its subtype_dealloc untracks them before it calls this, and tracks them again first
/// only for a tracked base, so only the tracked variant untracks.
fn dealloc(comptime tracked: bool) fn (*Object) callconv(.c) void {
    return struct {
        fn dealloc(o: *Object) callconv(.c) void {
            const self = cast(o);
            if (tracked) abi.PyObject_GC_UnTrack(o);
            if (self.weakreflist != null) abi.PyObject_ClearWeakRefs(o);
            abi.freeViaSlot(o);
        }
    }.dealloc;
}

/// Whether `tp` is this module's RLock type itself (either variant, any interpreter's), not a Python subclass.
fn isExactType(tp: *abi.TypeObject) bool {
    return abi.isInstanceType(tp, dealloc);
}

fn acquire(o: *Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    return acquireNamed(o, argv, nargs, kwnames);
}

/// `acquire()` with no arguments when it does not wait: a re-entry by the owner, or a free lock. No stack
/// frame of its own (as the lock's `acquireNamed`); everything else is `acquireSlow`'s.
inline fn acquireNamed(o: *Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) ?*Object {
    if (nargs == 0 and kwnames == null) {
        const r = &cast(o).rlock;
        const ident = currentIdent();
        if (r.owner.load(.monotonic) == ident) {
            const count = r.count.load(.monotonic);
            if (count != 0 and count != std.math.maxInt(u64)) {
                r.count.store(count + 1, .monotonic);
                return abi.boolean(true);
            }
        } else if (r.lock.tryAcquire()) {
            r.setOwner(ident, 1);
            return abi.boolean(true);
        }
    }
    return acquireSlow(o, argv, nargs, kwnames);
}

noinline fn acquireSlow(o: *Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) ?*Object {
    const self = cast(o);
    const timeout_ns: i64 = if (nargs == 0 and kwnames == null)
        -1
    else
        (args.parseAcquire(keywordsOf(o, kwnames), argv, nargs, kwnames) orelse return null).timeout_ns;
    const ident = currentIdent();
    const reentered = self.rlock.reenter(ident) catch {
        abi.PyErr_SetString(abi.PyExc_OverflowError, "Internal lock count overflowed");
        return null;
    };
    if (reentered) return abi.boolean(true);
    const acquired = wait.acquire(&self.rlock.lock, timeout_ns) orelse return null;
    if (acquired) self.rlock.setOwner(ident, 1);
    return abi.boolean(acquired);
}

/// The module's interned keyword names, looked up (through a subclass's bases) only for a call with keywords.
fn keywordsOf(o: *Object, kwnames: ?*Object) ?*const args.Keywords {
    return if (kwnames == null) null else &state.ofSubclass(abi.typeOf(o), isExactType).keywords;
}

/// `__enter__` until 3.14: acquire's arguments.
fn enter(o: *Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    return acquireNamed(o, argv, nargs, kwnames);
}

/// 3.15+ `__enter__()` (METH_NOARGS, as CPython's: the interpreter checks the arguments).
fn enterNoArgs(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    return acquireNamed(o, undefined, 0, null);
}

/// 3.15+ `__exit__(exc_type, exc_value, exc_tb, /)` (METH_FASTCALL, as CPython's).
fn exitPositional(o: *Object, _: [*]const *Object, nargs: isize) callconv(.c) ?*Object {
    if (nargs != 3) return args.exitArgumentCount(nargs);
    return release(o, null);
}

fn release(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    cast(o).rlock.release(currentIdent()) catch return notAcquired();
    return abi.none();
}

/// `__exit__(*exc_info)` until 3.14, as CPython's METH_VARARGS method: any positional arguments, no keywords.
fn exit(o: *Object, _: [*]const *Object, _: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    if (args.keywordCount(kwnames) != 0) return args.noKeywords(if (version.atLeast(11)) "RLock.__exit__" else "__exit__");
    return release(o, null);
}

noinline fn notAcquired() ?*Object {
    abi.PyErr_SetString(abi.PyExc_RuntimeError, "cannot release un-acquired lock");
    return null;
}

fn isOwned(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    return abi.boolean(cast(o).rlock.isOwnedBy(currentIdent()));
}

fn recursionCount(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    return abi.PyLong_FromUnsignedLongLong(cast(o).rlock.recursionCount(currentIdent()));
}

fn locked(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    return abi.boolean(cast(o).rlock.isLocked());
}

/// `_release_save()` -> (count, owner): gives the lock up entirely (threading.Condition.wait).
fn releaseSave(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    const self = cast(o);
    // 3.14+ (_PyRecursiveMutex): only the owner may; before, any thread while the lock is held.
    if (version.atLeast(14) and self.rlock.owner.load(.monotonic) != currentIdent()) return notAcquired();
    const saved = self.rlock.releaseSave() catch return notAcquired();
    const count = abi.PyLong_FromUnsignedLongLong(saved.count) orelse return null;
    defer abi.decRef(count);
    const owner = abi.PyLong_FromUnsignedLongLong(saved.owner) orelse return null;
    defer abi.decRef(owner);
    return abi.PyTuple_Pack(2, count, owner);
}

/// `_acquire_restore((count, owner))`, parsed as the running CPython does: "(kk)" until 3.13 (any
/// sequence), "(nK)" over a tuple from 3.14, a one-argument method from 3.15.
fn acquireRestore(o: *Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    if (args.keywordCount(kwnames) != 0) return args.noKeywords(if (version.atLeast(11)) "RLock._acquire_restore" else "_acquire_restore");
    if (nargs != 1) {
        if (version.atLeast(15)) {
            _ = abi.PyErr_Format(abi.PyExc_TypeError, "RLock._acquire_restore() takes exactly one argument (%zd given)", nargs);
        } else {
            _ = abi.PyErr_Format(abi.PyExc_TypeError, "_acquire_restore() takes exactly 1 argument (%zd given)", nargs);
        }
        return null;
    }
    var pair: [2]u64 = undefined;
    const ok = if (version.atLeast(14)) parseCountOwner(argv[0], &pair) else parseUnsignedPair(argv[0], &pair);
    if (!ok) return null;
    const self = cast(o);
    if (!self.rlock.lock.tryAcquire()) wait.acquireUninterruptibly(&self.rlock.lock);
    self.rlock.setOwner(pair[1], pair[0]);
    return abi.none();
}

/// 3.14+: a pair (any sequence, though the message says tuple) of count as Py_ssize_t via __index__
/// and owner as an int, masked.
fn parseCountOwner(pair: *Object, out: *[2]u64) bool {
    const arg: []const u8 = if (version.atLeast(15)) "argument" else "argument 1";
    if (abi.PySequence_Check(pair) == 0 or abi.isBytes(pair) or abi.isUnicode(pair)) {
        const name = args.argTypeName(pair) orelse return false;
        defer abi.decRef(name);
        _ = abi.PyErr_Format(abi.PyExc_TypeError, "_acquire_restore() %s must be 2-item tuple, not %U", arg.ptr, name);
        return false;
    }
    const len = abi.PySequence_Size(pair);
    if (len < 0) return false;
    if (len != 2) {
        const kind: [*:0]const u8 = if (abi.isTuple(pair)) "tuple" else "sequence";
        _ = abi.PyErr_Format(abi.PyExc_TypeError, "_acquire_restore() %s must be %s of length 2, not %zd", arg.ptr, kind, len);
        return false;
    }
    const first = abi.PySequence_GetItem(pair, 0) orelse return false;
    defer abi.decRef(first);
    const count = args.toSsize(first) orelse return false;
    const owner = abi.PySequence_GetItem(pair, 1) orelse return false;
    defer abi.decRef(owner);
    if (abi.PyIndex_Check(owner) == 0) {
        const name = args.argTypeName(owner) orelse return false;
        defer abi.decRef(name);
        const where: [*:0]const u8 = if (version.atLeast(15)) "argument 2" else "argument 1, item 1";
        _ = abi.PyErr_Format(abi.PyExc_TypeError, "_acquire_restore() %s must be int, not %U", where, name);
        return false;
    }
    const owner_int = abi.PyNumber_Index(owner) orelse return false;
    defer abi.decRef(owner_int);
    out[0] = @bitCast(@as(i64, @intCast(count)));
    out[1] = abi.PyLong_AsUnsignedLongLongMask(owner_int);
    return true;
}

fn parseUnsignedPair(seq: *Object, out: *[2]u64) bool {
    if (abi.PySequence_Check(seq) == 0 or abi.isBytes(seq)) return restoreTypeError(seq, "argument 1 must be 2-item sequence, not %U");
    const len = abi.PySequence_Size(seq);
    if (len < 0) return false;
    if (len != 2) {
        _ = abi.PyErr_Format(abi.PyExc_TypeError, "_acquire_restore() argument 1 must be sequence of length 2, not %zd", len);
        return false;
    }
    for (out, 0..) |*value, i| {
        const item = abi.PySequence_GetItem(seq, @intCast(i)) orelse {
            abi.PyErr_Clear();
            _ = abi.PyErr_Format(abi.PyExc_TypeError, "_acquire_restore() argument 1, item %zd is not retrievable", @as(isize, @intCast(i)));
            return false;
        };
        defer abi.decRef(item);
        if (!abi.isLong(item)) {
            const name = args.argTypeName(item) orelse return false;
            defer abi.decRef(name);
            _ = abi.PyErr_Format(abi.PyExc_TypeError, "_acquire_restore() argument 1, item %zd must be int, not %U", @as(isize, @intCast(i)), name);
            return false;
        }
        value.* = abi.PyLong_AsUnsignedLongLongMask(item); // "k": no overflow check, as CPython
    }
    return true;
}

fn restoreTypeError(obj: *Object, comptime fmt: []const u8) bool {
    const n = args.argTypeName(obj) orelse return false;
    defer abi.decRef(n);
    _ = abi.PyErr_Format(abi.PyExc_TypeError, "_acquire_restore() " ++ fmt, n);
    return false;
}

fn atForkReinit(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    cast(o).rlock.resetAfterFork();
    return abi.none();
}

fn repr(o: *Object) callconv(.c) ?*Object {
    const self = cast(o);
    const held: [*:0]const u8 = if (self.rlock.isLocked()) "locked" else "unlocked";
    // tp_name: "_thread.RLock" for this type, a Python subclass's __name__ otherwise.
    const name = args.instanceTypeName(o, isExactType(abi.typeOf(o)), type_name) orelse return null;
    defer abi.decRef(name);
    return abi.PyUnicode_FromFormat("<%s %U object owner=%llu count=%llu at %p>", held, name, self.rlock.owner.load(.monotonic), self.rlock.countNow(), o);
}

const fastcall_kw = abi.METH_FASTCALL | abi.METH_KEYWORDS;
const acquire_doc =
    \\acquire($self, /, blocking=True, timeout=-1)
    \\--
    \\
    \\Lock the lock.  `blocking` indicates whether we should wait
    \\for the lock to be available or not.  If `blocking` is False
    \\and another thread holds the lock, the method will return False
    \\immediately.  If `blocking` is True and another thread holds
    \\the lock, the method will wait for the lock to be released,
    \\take it and then return True.
    \\(note: the blocking operation is interruptible.)
    \\
    \\In all other cases, the method will return True immediately.
    \\Precisely, if the current thread already holds the lock, its
    \\internal counter is simply incremented. If nobody holds the lock,
    \\the lock is taken and its internal counter initialized to 1.
;
const release_doc =
    \\release($self, /)
    \\--
    \\
    \\Release the lock, allowing another thread that is blocked waiting for
    \\the lock to acquire the lock.  The lock must be in the locked state,
    \\and must be locked by the same thread that unlocks it; otherwise a
    \\`RuntimeError` is raised.
    \\
    \\Do note that if the lock was acquire()d several times in a row by the
    \\current thread, release() needs to be called as many times for the lock
    \\to be available for other threads.
;

const shared_methods = [_]abi.MethodDef{
    .{ .ml_name = "acquire", .ml_meth = @ptrCast(&acquire), .ml_flags = fastcall_kw, .ml_doc = acquire_doc },
    args.noArgsMethod("RLock", "release", release, release_doc),
    args.noArgsMethod("RLock", "locked", locked, "locked($self, /)\n--\n\nReturn a boolean indicating whether this object is locked right now."),
    args.noArgsMethod("RLock", "_is_owned", isOwned, "_is_owned($self, /)\n--\n\nFor internal use by `threading.Condition`."),
    args.noArgsMethod("RLock", "_recursion_count", recursionCount, "_recursion_count($self, /)\n--\n\nFor internal use by reentrancy checks."),
    .{ .ml_name = "_acquire_restore", .ml_meth = @ptrCast(&acquireRestore), .ml_flags = fastcall_kw, .ml_doc = "_acquire_restore($self, state, /)\n--\n\nFor internal use by `threading.Condition`." },
    args.noArgsMethod("RLock", "_release_save", releaseSave, "_release_save($self, /)\n--\n\nFor internal use by `threading.Condition`."),
    args.noArgsMethod("RLock", "_at_fork_reinit", atForkReinit, "_at_fork_reinit($self, /)\n--\n\n"),
};

/// Until 3.14 `__enter__` takes acquire's arguments and `__exit__` any positional ones; from 3.15 they are
/// CPython's METH_NOARGS and METH_FASTCALL methods (the interpreter's checks and messages, and its cheapest
/// calls from a `with` statement).
var methods_until_3_14 = shared_methods ++ [_]abi.MethodDef{
    .{ .ml_name = "__enter__", .ml_meth = @ptrCast(&enter), .ml_flags = fastcall_kw, .ml_doc = "__enter__($self, /, blocking=True, timeout=-1)\n--\n\nLock the lock." },
    .{ .ml_name = "__exit__", .ml_meth = @ptrCast(&exit), .ml_flags = fastcall_kw, .ml_doc = "__exit__($self, /, *exc_info)\n--\n\nRelease the lock." },
    abi.sentinel_method,
};

var methods_from_3_15 = shared_methods ++ [_]abi.MethodDef{
    .{ .ml_name = "__enter__", .ml_meth = @ptrCast(&enterNoArgs), .ml_flags = abi.METH_NOARGS, .ml_doc = "__enter__($self, /)\n--\n\nLock the lock." },
    .{ .ml_name = "__exit__", .ml_meth = @ptrCast(&exitPositional), .ml_flags = abi.METH_FASTCALL, .ml_doc = "__exit__($self, exc_type, exc_value, exc_tb, /)\n--\n\nRelease the lock." },
    abi.sentinel_method,
};

var members = [_]abi.MemberDef{
    abi.offsetMember("__weaklistoffset__", RLockObject, "weakreflist"),
    .{ .name = null, .type = 0, .offset = 0, .flags = 0, .doc = null },
};

const type_name = "_thread.RLock";

/// The type's slots but tp_dealloc (abi.instanceSpec adds it, and tp_traverse for the tracked variant).
fn slots(comptime methods: anytype) []const abi.TypeSlot {
    const all = [_]abi.TypeSlot{
        .{ .slot = abi.Py_tp_new, .pfunc = @ptrCast(&new) },
        .{ .slot = abi.Py_tp_repr, .pfunc = @ptrCast(&repr) },
        .{ .slot = abi.Py_tp_methods, .pfunc = @ptrCast(methods) },
        .{ .slot = abi.Py_tp_members, .pfunc = @ptrCast(&members) },
    };
    return &all;
}
const flags = abi.Py_TPFLAGS_DEFAULT | abi.Py_TPFLAGS_BASETYPE | abi.Py_TPFLAGS_IMMUTABLETYPE;

/// The specs of 3.10-3.14 and 3.15+, for RLocks the GC does not track, and for tracked ones.
fn eraSpecs(comptime tracked: bool) [2]abi.TypeSpec {
    return .{
        abi.instanceSpec(type_name, RLockObject, flags, dealloc, slots(&methods_until_3_14), tracked),
        abi.instanceSpec(type_name, RLockObject, flags, dealloc, slots(&methods_from_3_15), tracked),
    };
}
const specs = [2][2]abi.TypeSpec{ eraSpecs(false), eraSpecs(true) };

/// Creates the type for `module`; its instances are `tracked` by the GC or not (abi.instanceSpec; a Python
/// subclass's are always). Nothing here is written: every interpreter may create its type at the same time.
pub fn createType(module: *Object, tracked: bool) ?*Object {
    return abi.PyType_FromModuleAndSpec(module, &specs[@intFromBool(tracked)][@intFromBool(version.atLeast(15))], null);
}
