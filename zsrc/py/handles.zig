//! Thread handles: the native record of one thread (ident, OS thread, "done" event), shared by the
//! thread itself and the Python `_ThreadHandle` object that lets other threads join it.
//!
//! A thread signals "done" only after its thread state is deleted, without the GIL, so a joiner that
//! goes on to finalize the interpreter never races with the thread's own teardown. That is why the
//! record is native and reference counted, not a Python object.
//!
//! Handles live in a `Registry`, one per module state (so per interpreter): `_count()`, `_shutdown()` and
//! the at-fork hook see only the threads of their own interpreter. A registry is reference counted too
//! (the module state and each of its handles hold one), because a thread may outlive its module.
const std = @import("std");
const core = @import("core");
const abi = @import("abi.zig");
const args = @import("args.zig");
const errors = @import("errors.zig");
const lock = @import("lock.zig");
const module = @import("module.zig");
const state = @import("state.zig");
const threads = @import("threads.zig");
const version = @import("version.zig");

const Object = abi.Object;
const allocator = std.heap.c_allocator;

pub const Handle = struct {
    /// One for each holder: the running thread, the Python object, `_shutdown`'s list, a joiner.
    refs: std.atomic.Value(u32) = .init(1),
    /// The registry it is listed in (a reference), from `register` on.
    registry: ?*Registry = null,
    ident: std.atomic.Value(u64) = .init(0),
    state: std.atomic.Value(State) = .init(.not_started),
    exited: core.Event = .{},
    /// The OS thread, stored by its creator once `spawn` returns, then `published` is set: the thread waits for
    /// that before it reports done, so whoever sees it done finds the OS thread (with no GIL, a joiner can run
    /// between the spawn and the store). Joined or detached once, by whoever takes it first (`settleOsThread`):
    /// two threads may join one handle at once, with no GIL between them on a free-threaded CPython.
    os_thread: ?core.thread.Thread = null,
    published: core.Event = .{},
    os_thread_taken: std.atomic.Value(bool) = .init(false),
    /// Set once the OS thread is joined or detached (or there is none): a second joiner waits for it, so
    /// `join()` returns only when the thread is gone, for every joiner (CPython's once-flag does the same).
    settled: core.Event = .{},
    daemon: bool = true,
    /// `_set_sentinel()`'s lock for this thread (3.10-3.12 threading), released once the thread is gone.
    sentinel: ?*Object = null,

    pub const State = enum(u8) { not_started, starting, running, done };

    pub fn create() ?*Handle {
        const h = allocator.create(Handle) catch {
            _ = abi.PyErr_NoMemory();
            return null;
        };
        h.* = .{};
        return h;
    }

    pub fn incRef(self: *Handle) void {
        _ = self.refs.fetchAdd(1, .monotonic);
    }

    /// Takes a reference unless the handle is already being destroyed (count 0).
    fn tryIncRef(self: *Handle) bool {
        var n = self.refs.load(.monotonic);
        while (n != 0) n = self.refs.cmpxchgWeak(n, n + 1, .acquire, .monotonic) orelse return true;
        return false;
    }

    /// Needs no GIL.
    pub fn decRef(self: *Handle) void {
        if (self.refs.fetchSub(1, .acq_rel) != 1) return;
        if (self.registry) |r| r.drop(self);
        // Nobody can join it any more: let the OS reclaim the thread when it ends.
        _ = self.settleOsThread(.detach);
        allocator.destroy(self);
    }

    /// Joins or detaches the OS thread, once: true for the caller that did it (or found none to settle),
    /// false for every later caller, who may wait on `settled`. `.join` blocks: call it without the GIL.
    pub fn settleOsThread(self: *Handle, how: enum { join, detach }) bool {
        if (self.os_thread_taken.swap(true, .acq_rel)) return false;
        if (self.os_thread) |t| switch (how) {
            // A thread that has signalled its exit has only its last instructions left: a joiner (without the
            // GIL) polls for its end through a hand-over spin rather than sleep in the kernel for it.
            .join => if (!(core.thread.can_try_join and core.handover.spinUntil(Handle.tryJoinOs, self))) t.join(),
            .detach => t.detach(),
        };
        self.settled.set();
        return true;
    }

    fn tryJoinOs(self: *Handle) bool {
        return self.os_thread.?.tryJoin();
    }

    pub fn isDone(self: *const Handle) bool {
        return self.exited.isSet();
    }
};

// ---- the registry of one module's handles (_count, _shutdown, fork) ----

pub const Registry = struct {
    /// The module state's, and one per handle listed.
    refs: std.atomic.Value(u32) = .init(1),
    /// Guards `live` and `graveyard`; held only for short, non-blocking sections, with or without a GIL.
    /// Interpreters with GILs of their own never share a registry, but a thread ends without its GIL.
    lock: core.Lock = .{},
    /// Every handle that has started (or was made for an existing thread), until it is destroyed. Not
    /// owning: a handle removes itself when its last reference goes.
    live: std.ArrayList(*Handle) = .empty,
    /// Sentinel locks released by threads that had no GIL any more; decref'd by the next caller with the
    /// GIL of this registry's interpreter (`buryDead`), or when the module is cleared.
    graveyard: std.ArrayList(*Object) = .empty,
    /// `_count()`: threads started by this module that have not finished.
    running: std.atomic.Value(isize) = .init(0),

    pub fn create() ?*Registry {
        const r = allocator.create(Registry) catch {
            _ = abi.PyErr_NoMemory();
            return null;
        };
        r.* = .{};
        return r;
    }

    pub fn incRef(self: *Registry) void {
        _ = self.refs.fetchAdd(1, .monotonic);
    }

    /// Needs no GIL. The graveyard is empty by then: every lock in it holds the module, which holds a
    /// reference to the registry.
    pub fn decRef(self: *Registry) void {
        if (self.refs.fetchSub(1, .acq_rel) != 1) return;
        std.debug.assert(self.live.items.len == 0);
        self.live.deinit(allocator);
        self.graveyard.deinit(allocator);
        allocator.destroy(self);
    }

    pub fn lockShort(self: *Registry) void {
        while (self.lock.acquire(.forever) != .acquired) {}
    }

    pub fn unlock(self: *Registry) void {
        self.lock.release() catch unreachable;
    }

    /// Lists `h`, which takes a reference to the registry. False with MemoryError set on failure.
    pub fn add(self: *Registry, h: *Handle) bool {
        std.debug.assert(h.registry == null);
        self.lockShort();
        defer self.unlock();
        self.live.append(allocator, h) catch {
            _ = abi.PyErr_NoMemory();
            return false;
        };
        self.incRef();
        h.registry = self;
        return true;
    }

    /// Stops listing `h` (its thread did not start, or it is being destroyed), and drops its reference.
    pub fn drop(self: *Registry, h: *Handle) void {
        std.debug.assert(h.registry == self);
        h.registry = null;
        self.lockShort();
        for (self.live.items, 0..) |x, i| {
            if (x == h) {
                _ = self.live.swapRemove(i);
                break;
            }
        }
        self.unlock();
        self.decRef();
    }

    /// A thread that ended hands its sentinel lock over (no GIL: it cannot drop the reference itself).
    fn bury(self: *Registry, lock_obj: *Object) void {
        self.lockShort();
        defer self.unlock();
        self.graveyard.append(allocator, lock_obj) catch {}; // on OOM the lock object leaks, harmlessly
    }

    /// Drops the references that finished threads could not drop without the GIL. Call with the GIL of
    /// this registry's interpreter.
    pub fn buryDead(self: *Registry) void {
        self.lockShort();
        if (self.graveyard.items.len == 0) return self.unlock();
        const dead = self.graveyard.toOwnedSlice(allocator) catch &.{};
        self.unlock();
        defer allocator.free(dead);
        for (dead) |o| abi.decRef(o);
    }

    /// The module's tp_traverse: the graveyard's references are the module's (through its state).
    pub fn traverse(self: *Registry, visit: abi.VisitProc, arg: ?*anyopaque) c_int {
        self.lockShort();
        defer self.unlock();
        for (self.graveyard.items) |o| {
            const rc = visit(o, arg);
            if (rc != 0) return rc;
        }
        return 0;
    }
};

/// Called by the thread itself once its thread state is deleted: no GIL, no Python.
pub fn finishWithoutGil(h: *Handle) void {
    if (h.sentinel) |lock_obj| {
        lock.coreLock(lock_obj).release() catch {}; // Python may have released it already
        h.registry.?.bury(lock_obj);
        h.sentinel = null;
    }
    h.state.store(.done, .release);
    h.exited.set();
}

/// The handle of the calling thread if zthread started it.
pub threadlocal var current: ?*Handle = null;

// ---- after fork ----

/// os.register_at_fork(after_in_child=...), bound to a weak reference to the module: only the forking thread
/// exists in the child. Every other handle of the module is done and can never be joined at the OS level.
/// (The child has no interpreter but the main one; each module registers its own hook, which runs when its
/// interpreter forks.) The reference is weak because the interpreter keeps its at-fork hooks until its very end,
/// after its last garbage collection: a hook that held the module would keep the module and its types
/// alive past it, and with them the memory of a closed subinterpreter.
/// (The core's process-wide state, starving waiters and the hand-over's counts, is reset by the core itself,
/// whoever forked: core/fork.zig.)
fn afterForkInChild(module_ref: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    const module_obj = abi.PyObject_CallFunctionObjArgs(module_ref.?, @as(?*Object, null)) orelse return null;
    defer abi.decRef(module_obj);
    if (module_obj == abi.noneObject()) return abi.none();
    const registry = state.of(module_obj).threads orelse return abi.none();
    registry.lock.resetAfterFork();
    const me = core.thread.currentIdent();
    for (registry.live.items) |h| {
        if (h.ident.load(.monotonic) == me and h.state.load(.monotonic) != .done) continue;
        h.os_thread_taken.store(true, .monotonic); // that thread does not exist here
        h.settled.set();
        h.state.store(.done, .monotonic);
        h.exited.set();
    }
    // The forking thread alone may still count, if this module started it.
    const forking_thread_counts = if (current) |h| h.registry == registry else false;
    registry.running.store(@intFromBool(forking_thread_counts), .monotonic);
    module.afterForkInChild();
    return abi.none();
}

var after_fork_def: abi.MethodDef = .{ .ml_name = "_after_fork_child", .ml_meth = @ptrCast(&afterForkInChild), .ml_flags = abi.METH_NOARGS, .ml_doc = null };

/// Registers the module's at-fork hook (at its initialisation).
pub fn registerForkHook(module_obj: *Object) void {
    const saved = errors.save();
    defer errors.restore(saved);
    const os_mod = abi.PyImport_ImportModule("os") orelse return abi.PyErr_Clear();
    defer abi.decRef(os_mod);
    const register_at_fork = abi.PyObject_GetAttrString(os_mod, "register_at_fork") orelse return abi.PyErr_Clear();
    defer abi.decRef(register_at_fork);
    const module_ref = abi.PyWeakref_NewRef(module_obj, null) orelse return abi.PyErr_Clear();
    defer abi.decRef(module_ref);
    const hook = abi.PyCFunction_NewEx(&after_fork_def, module_ref, null) orelse return abi.PyErr_Clear();
    defer abi.decRef(hook);
    const no_args = abi.PyTuple_New(0) orelse return abi.PyErr_Clear();
    defer abi.decRef(no_args);
    const kwargs = abi.PyDict_New() orelse return abi.PyErr_Clear();
    defer abi.decRef(kwargs);
    if (abi.PyDict_SetItemString(kwargs, "after_in_child", hook) != 0) return abi.PyErr_Clear();
    const r = abi.PyObject_Call(register_at_fork, no_args, kwargs) orelse return abi.PyErr_Clear();
    abi.decRef(r);
}

// ---- joining ----

pub const JoinError = error{ NotStarted, JoinSelf, Interrupted, Finalizing };

/// Waits for the thread to exit, at most `timeout_ns` (-1: forever), then reaps the OS thread once.
/// Returns false on timeout. Releases the GIL while waiting; a signal handler that raises ends the wait.
pub fn join(h: *Handle, timeout_ns: i64) JoinError!bool {
    if (h.state.load(.acquire) == .not_started) return error.NotStarted;
    if (!h.isDone() and h.ident.load(.monotonic) == core.thread.currentIdent()) return error.JoinSelf;
    // 3.14 (gh-123940): during finalization the thread cannot run on to its end: refuse, do not hang.
    if (!h.isDone() and version.atLeast(14) and errors.refuseAtShutdown("cannot join thread at interpreter shutdown")) return error.Finalizing;
    const deadline: core.clock.Deadline = if (timeout_ns < 0) .forever else .fromTimeout(@intCast(timeout_ns));
    while (!h.isDone()) {
        const tstate = abi.PyEval_SaveThread();
        const result = h.exited.wait(deadline);
        abi.PyEval_RestoreThread(tstate);
        switch (result) {
            .set => {},
            .timed_out => return false,
            .interrupted => {
                if (abi.Py_MakePendingCalls() < 0) return error.Interrupted;
                if (deadline.hasPassed()) return h.isDone();
            },
        }
    }
    reap(h);
    return true;
}

/// Joins the finished OS thread, once: the first caller joins it, any other waits until that is done (the
/// thread has signalled its exit: only its last instructions remain, so neither wait is long).
fn reap(h: *Handle) void {
    if (h.settled.isSet()) return;
    const tstate = abi.PyEval_SaveThread();
    if (!h.settleOsThread(.join)) {
        while (h.settled.wait(.forever) != .set) {}
    }
    abi.PyEval_RestoreThread(tstate);
}

/// What CPython's start does when a thread cannot start: the handle is done (a joiner already waiting
/// returns; the handle cannot be started again), with no OS thread.
pub fn forceDone(h: *Handle) void {
    _ = h.settleOsThread(.detach);
    h.published.set();
    h.state.store(.done, .release);
    h.exited.set();
}

/// Joins every non-daemon thread still running, except the caller's (3.13's `_thread._shutdown`).
/// Only this module's threads: those of the calling interpreter.
pub fn shutdown(module_obj: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    const registry = state.of(module_obj.?).threads orelse return abi.none();
    registry.buryDead();
    const me = core.thread.currentIdent();
    while (true) {
        registry.lockShort();
        const next: ?*Handle = for (registry.live.items) |h| {
            if (!h.daemon and !h.isDone() and h.ident.load(.monotonic) != me and h.tryIncRef()) break h;
        } else null;
        registry.unlock();
        const h = next orelse break;
        defer h.decRef();
        _ = join(h, -1) catch {
            errors.writeUnraisable(module_obj.?, "Exception ignored while joining a thread in _thread._shutdown()", null, null);
            return abi.none();
        };
    }
    return abi.none();
}

// ---- the Python type `_thread._ThreadHandle` ----

/// A `_ThreadHandle`'s fields, after its object header (abi.data).
pub const HandleObject = extern struct {
    handle: *Handle,
};

inline fn cast(o: *Object) *HandleObject {
    return abi.data(HandleObject, o);
}

pub fn handleOf(o: *Object) *Handle {
    return cast(o).handle;
}

/// `_make_thread_handle(ident, /)`: a handle for a thread zthread did not start (the main thread, a
/// dummy thread): running, not joinable at the OS level, done when `_set_done()` says so.
pub fn makeThreadHandle(module_obj: ?*Object, ident_obj: *Object) callconv(.c) ?*Object {
    if (!abi.isLong(ident_obj)) {
        abi.PyErr_SetString(abi.PyExc_TypeError, "ident must be an integer");
        return null;
    }
    const ident = abi.PyLong_AsUnsignedLongLong(ident_obj);
    if (ident == std.math.maxInt(c_ulonglong) and abi.PyErr_Occurred() != null) return null;
    const s = state.of(module_obj.?);
    const registry = state.threadRegistry(s) orelse return null;
    const h = Handle.create() orelse return null;
    h.ident.store(ident, .monotonic);
    h.state.store(.running, .release);
    if (!registry.add(h)) {
        h.decRef();
        return null;
    }
    return newObject(s, h) orelse {
        h.decRef();
        return null;
    };
}

/// A `_ThreadHandle` of `s`'s type for `h`, which it takes over.
pub fn newObject(s: *const state.State, h: *Handle) ?*Object {
    const tp = state.handleType(s) orelse return null;
    const o = abi.newInstance(tp, s.tracked) orelse return null;
    cast(o).handle = h;
    return o;
}

pub fn isHandleObject(o: *Object) bool {
    return abi.isInstanceType(abi.typeOf(o), dealloc);
}

/// `_ThreadHandle(*args, **kwargs)`: arguments ignored, as in CPython.
fn new(tp: *abi.TypeObject, _: *Object, _: ?*Object) callconv(.c) ?*Object {
    const h = Handle.create() orelse return null;
    return newObject(state.ofType(tp), h) orelse {
        h.decRef();
        return null;
    };
}

/// tp_dealloc of the type's variant whose handles are `tracked` by the GC or not (abi.instanceSpec).
fn dealloc(comptime tracked: bool) fn (*Object) callconv(.c) void {
    return struct {
        fn dealloc(o: *Object) callconv(.c) void {
            cast(o).handle.decRef();
            abi.freeInstance(o, tracked);
        }
    }.dealloc;
}

fn repr(o: *Object) callconv(.c) ?*Object {
    return abi.PyUnicode_FromFormat("<_thread._ThreadHandle object: ident=%llu>", cast(o).handle.ident.load(.monotonic));
}

fn getIdent(o: *Object, _: ?*anyopaque) callconv(.c) ?*Object {
    return abi.PyLong_FromUnsignedLongLong(cast(o).handle.ident.load(.monotonic));
}

/// `join(timeout=None, /)`.
fn joinMethod(o: *Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    // The module's registry, not the handle's field: another thread may be starting this handle.
    if (state.ofType(abi.typeOf(o)).threads) |r| r.buryDead();
    if (args.keywordCount(kwnames) != 0) return args.noKeywords("join");
    if (nargs > 1) return args.tooManyPositional("join", 1, nargs);
    var timeout_ns: i64 = -1;
    if (nargs == 1 and argv[0] != abi.noneObject()) timeout_ns = args.secondsToNs(argv[0]) orelse return null;
    _ = join(cast(o).handle, timeout_ns) catch |e| return joinError(e);
    return abi.none();
}

pub fn joinError(e: JoinError) ?*Object {
    switch (e) {
        error.NotStarted => abi.PyErr_SetString(abi.PyExc_RuntimeError, "thread not started"),
        error.JoinSelf => abi.PyErr_SetString(abi.PyExc_RuntimeError, "Cannot join current thread"),
        error.Interrupted, error.Finalizing => {},
    }
    return null;
}

fn isDoneMethod(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    const h = cast(o).handle;
    if (!h.isDone()) return abi.boolean(false);
    reap(h);
    return abi.boolean(true);
}

/// `_set_done()`: for handles of threads zthread did not start (the main thread, dummy threads).
fn setDone(o: *Object, _: ?*Object) callconv(.c) ?*Object {
    const h = cast(o).handle;
    if (h.state.load(.acquire) == .not_started) {
        abi.PyErr_SetString(abi.PyExc_RuntimeError, "thread not started");
        return null;
    }
    _ = h.settleOsThread(.detach);
    h.state.store(.done, .release);
    h.exited.set();
    return abi.none();
}

var methods = [_]abi.MethodDef{
    .{ .ml_name = "join", .ml_meth = @ptrCast(&joinMethod), .ml_flags = abi.METH_FASTCALL | abi.METH_KEYWORDS, .ml_doc = "join($self, timeout=None, /)\n--\n\nWait for the thread to finish, at most `timeout` seconds (None: no limit)." },
    args.noArgsMethod("_ThreadHandle", "is_done", isDoneMethod, "is_done($self, /)\n--\n\nReturn whether the thread has finished."),
    args.noArgsMethod("_ThreadHandle", "_set_done", setDone, "_set_done($self, /)\n--\n\nMark the thread as finished (for threads zthread did not start)."),
    abi.sentinel_method,
};

var getset = [_]abi.GetSetDef{
    .{ .name = "ident", .get = @ptrCast(&getIdent), .set = null, .doc = "The thread's identifier (get_ident()), 0 before it starts.", .closure = null },
    .{ .name = null, .get = null, .set = null, .doc = null, .closure = null },
};

const slots = [_]abi.TypeSlot{
    .{ .slot = abi.Py_tp_new, .pfunc = @ptrCast(&new) },
    .{ .slot = abi.Py_tp_repr, .pfunc = @ptrCast(&repr) },
    .{ .slot = abi.Py_tp_methods, .pfunc = @ptrCast(&methods) },
    .{ .slot = abi.Py_tp_getset, .pfunc = @ptrCast(&getset) },
};
const flags = abi.Py_TPFLAGS_DEFAULT | abi.Py_TPFLAGS_IMMUTABLETYPE;
/// [tracked]
const specs = [2]abi.TypeSpec{
    abi.instanceSpec("_thread._ThreadHandle", HandleObject, flags, dealloc, &slots, false),
    abi.instanceSpec("_thread._ThreadHandle", HandleObject, flags, dealloc, &slots, true),
};

/// Its handles are `tracked` by the GC or not (abi.instanceSpec).
pub fn createType(module_obj: *Object, tracked: bool) ?*Object {
    return abi.PyType_FromModuleAndSpec(module_obj, &specs[@intFromBool(tracked)], null);
}
