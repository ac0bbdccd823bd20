//! Starting Python threads on the core's OS threads: `start_new_thread`, `start_joinable_thread`,
//! `_set_sentinel`, `stack_size`, `_count`, and what a thread does with an exception that escapes it.
const std = @import("std");
const core = @import("core");
const abi = @import("abi.zig");
const args = @import("args.zig");
const errors = @import("errors.zig");
const handles = @import("handles.zig");
const interp_info = @import("interp.zig");
const lock = @import("lock.zig");
const state = @import("state.zig");
const version = @import("version.zig");

const Object = abi.Object;
const Handle = handles.Handle;

/// What a new thread needs to run `function(*args, **kwargs)`; owned by the new thread once started.
const Bootstrap = struct {
    interp: *abi.InterpreterState,
    /// zthread's module of that interpreter (a reference): its state outlives the thread's Python code.
    module: *Object,
    function: *Object,
    args: *Object,
    kwargs: ?*Object,
    handle: *Handle,
    /// Set once the thread has made its thread state, if its creator waits for that (see `start`). It is
    /// the creator's (on its stack): touched by the thread only to set it.
    has_thread_state: ?*core.Event,
};

pub fn startNewThread(module: ?*Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    if (args.keywordCount(kwnames) != 0) return args.noKeywords("start_new_thread");
    if (nargs < 2) return argCountError("least", 2, nargs);
    if (nargs > 3) return argCountError("most", 3, nargs);
    const function = argv[0];
    const call_args = argv[1];
    const kwargs: ?*Object = if (nargs == 3) argv[2] else null;
    if (abi.PyCallable_Check(function) == 0) return typeError("first arg must be callable");
    if (!abi.isTuple(call_args)) return typeError("2nd arg must be a tuple");
    if (kwargs) |kw| if (!abi.isDict(kw)) return typeError("optional 3rd arg must be a dictionary");
    if (!mayStartThread(module.?)) return null;
    const h = Handle.create() orelse return null;
    defer h.decRef(); // nobody will join it: only the thread keeps its handle
    if (!start(module.?, h, function, call_args, kwargs, state.of(module.?).stack_size_bytes.load(.monotonic), true)) return null;
    return abi.PyLong_FromUnsignedLongLong(h.ident.load(.monotonic));
}

/// `start_joinable_thread(function, handle=None, daemon=True)` -> handle (3.13's API, on every version).
pub fn startJoinableThread(module: ?*Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    var values = [_]?*Object{ null, null, null };
    if (!args.parseKeywords("start_joinable_thread", &.{ "function", "handle", "daemon" }, 1, argv, nargs, kwnames, &values)) return null;
    return startJoinable(module.?, values[0].?, values[1], values[2], state.of(module.?).stack_size_bytes.load(.monotonic));
}

/// `_start_thread(function, stack_size=0, daemon=True)` -> handle: start_joinable_thread with this thread's
/// own stack size (0: the default), whatever `stack_size()` says; zthread.start_thread is built on it.
pub fn startThread(module: ?*Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    var values = [_]?*Object{ null, null, null };
    if (!args.parseKeywords("_start_thread", &.{ "function", "stack_size", "daemon" }, 1, argv, nargs, kwnames, &values)) return null;
    const size = if (values[1]) |o| toStackSize(o) orelse return null else 0;
    return startJoinable(module.?, values[0].?, null, values[2], size);
}

fn startJoinable(module: *Object, function: *Object, handle_arg: ?*Object, daemon_arg: ?*Object, stack_size: usize) ?*Object {
    if (abi.PyCallable_Check(function) == 0) return typeError("thread function must be callable");
    var daemon = true;
    if (daemon_arg) |d| {
        const truth = abi.PyObject_IsTrue(d);
        if (truth < 0) return null;
        daemon = truth != 0;
    }
    const handle_obj = if (handle_arg != null and handle_arg != abi.noneObject()) blk: {
        const o = handle_arg.?;
        if (!handles.isHandleObject(o)) return typeError("'handle' must be a _ThreadHandle");
        break :blk abi.newRef(o);
    } else blk: {
        const h = Handle.create() orelse return null;
        break :blk handles.newObject(state.of(module), h) orelse {
            h.decRef();
            return null;
        };
    };
    const h = handles.handleOf(handle_obj);
    if (h.state.load(.acquire) != .not_started) {
        abi.decRef(handle_obj);
        abi.PyErr_SetString(abi.PyExc_RuntimeError, "thread already started");
        return null;
    }
    if (!mayStartThread(module)) {
        abi.decRef(handle_obj);
        return null;
    }
    const no_args = abi.PyTuple_New(0) orelse return null;
    defer abi.decRef(no_args);
    if (!start(module, h, function, no_args, null, stack_size, daemon)) {
        abi.decRef(handle_obj);
        return null;
    }
    return handle_obj;
}

/// CPython's refusals: a subinterpreter without threads (3.12+), an interpreter shutting down (3.12+).
fn mayStartThread(module: *Object) bool {
    if (!state.of(module).threads_allowed) {
        abi.PyErr_SetString(abi.PyExc_RuntimeError, "thread is not supported for isolated subinterpreters");
        return false;
    }
    if (!version.atLeast(12)) return true;
    return !errors.refuseAtShutdown("can't create new thread at interpreter shutdown");
}

fn argCountError(bound: [*:0]const u8, limit: isize, given: isize) ?*Object {
    const plural: [*:0]const u8 = if (limit == 1) "" else "s";
    _ = abi.PyErr_Format(abi.PyExc_TypeError, "start_new_thread expected at %s %zd argument%s, got %zd", bound, limit, plural, given);
    return null;
}

fn typeError(msg: [*:0]const u8) ?*Object {
    abi.PyErr_SetString(abi.PyExc_TypeError, msg);
    return null;
}

/// Starts an OS thread running the call, with `h` as its handle, in the calling interpreter. False with
/// RuntimeError set on failure. `daemon` is stored once the handle is claimed.
fn start(module: *Object, h: *Handle, function: *Object, call_args: *Object, kwargs: ?*Object, stack_size: usize, daemon: bool) bool {
    const registry = state.threadRegistry(state.of(module)) orelse return false;
    registry.buryDead();
    const interp = interp_info.current();
    // A subinterpreter can be destroyed as soon as this call returns, and the new thread makes its thread
    // state itself (the stable ABI has no way to make one for another OS thread): until it has made it and
    // attached it (taken the GIL), closing the interpreter can free either under it. So in a subinterpreter
    // the creator waits for that, and closing the interpreter then treats the thread as it treats CPython's
    // own that run (an error, or a wait), never freeing the interpreter or the state under a thread about to
    // enter it. The main interpreter is never freed.
    var has_thread_state: core.Event = .{};
    const in_subinterpreter = abi.PyInterpreterState_GetID(interp) != 0;
    const boot = std.heap.c_allocator.create(Bootstrap) catch {
        _ = abi.PyErr_NoMemory();
        return false;
    };
    boot.* = .{
        .interp = interp,
        .module = abi.newRef(module),
        .function = abi.newRef(function),
        .args = abi.newRef(call_args),
        .kwargs = if (kwargs) |kw| abi.newRef(kw) else null,
        .handle = h,
        .has_thread_state = if (in_subinterpreter) &has_thread_state else null,
    };
    // One starter per handle: with no GIL two threads may start the same one at once (CPython: under the
    // handle's mutex). From here on a failure leaves the handle done, as CPython's start does.
    if (h.state.cmpxchgStrong(.not_started, .starting, .acq_rel, .acquire) != null) {
        freeBootstrap(boot);
        abi.PyErr_SetString(abi.PyExc_RuntimeError, "thread already started");
        return false;
    }
    h.daemon = daemon; // the claimant's alone (read by _shutdown once the registry lists the handle)
    h.incRef(); // the thread's reference
    if (!registry.add(h)) {
        handles.forceDone(h);
        h.decRef();
        freeBootstrap(boot);
        return false;
    }
    _ = registry.running.fetchAdd(1, .monotonic);
    core.handover.threadStarting(); // until the thread runs Python, no thread spins (core.handover.starting)
    const thread = core.thread.spawn(Bootstrap, run, boot, stack_size) catch {
        core.handover.threadEntered();
        _ = registry.running.fetchSub(1, .monotonic);
        registry.drop(h); // not started: nothing for _shutdown or fork to see
        handles.forceDone(h); // a joiner that saw it starting returns
        h.decRef();
        freeBootstrap(boot);
        abi.PyErr_SetString(abi.PyExc_RuntimeError, "can't start new thread");
        return false;
    };
    h.ident.store(thread.ident(), .monotonic);
    h.os_thread = thread;
    h.published.set(); // the thread may now report done (run waits for this)
    if (h.state.cmpxchgStrong(.starting, .running, .acq_rel, .monotonic)) |_| {} // the thread may be done already
    if (in_subinterpreter) {
        // Short: the thread needs nothing this thread holds but the GIL, let go here. Until the event is set,
        // nothing may end this wait: the thread will write to it, on this stack. (If the interpreter is
        // closed meanwhile, CPython parks the new thread in its attach for good, and this one with it, as
        // any thread of a closed interpreter.)
        const tstate = abi.PyEval_SaveThread();
        while (has_thread_state.wait(.forever) != .set) {} // a signal: Python handles it once we return
        abi.PyEval_RestoreThread(tstate);
    }
    return true;
}

fn freeBootstrap(boot: *Bootstrap) void {
    abi.decRef(boot.module);
    abi.decRef(boot.function);
    abi.decRef(boot.args);
    abi.xDecRef(boot.kwargs);
    std.heap.c_allocator.destroy(boot);
}

/// The new thread's body: a thread state of its own in the creator's interpreter, the call, then the
/// thread state's teardown; only then, without the GIL, the handle says "done".
fn run(boot: *Bootstrap) void {
    const h = boot.handle;
    handles.current = h;
    h.ident.store(core.thread.currentIdent(), .monotonic);
    defer {
        _ = h.registry.?.running.fetchSub(1, .monotonic);
        // Whoever sees this thread done must find its OS thread, which the creator stores after spawn returns.
        while (h.published.wait(.forever) != .set) {}
        handles.finishWithoutGil(h);
        core.handover.threadLeftPython(); // after the GIL and the sentinel are released: a spinner may take them
        h.decRef();
    }
    // PyThreadState_New needs no GIL; it fails only when out of memory, and then no Python object can
    // be touched here: the references in `boot` are leaked rather than released without the GIL.
    const tstate = abi.PyThreadState_New(boot.interp) orelse {
        if (boot.has_thread_state) |e| e.set(); // nothing of the interpreter's is touched from here on
        core.handover.threadEntered();
        return;
    };
    abi.PyEval_AcquireThread(tstate);
    // Attached: from here on closing the interpreter treats this thread as one of CPython's own that runs.
    // (Set once the state was made, a close between that and this attach freed the state under the thread:
    // a crash in PyEval_AcquireThread in 5-15 % of runs of 150 closes on 3.14/3.15.)
    if (boot.has_thread_state) |e| e.set();
    core.handover.threadEntered();
    const module = abi.newRef(boot.module);
    const function = abi.newRef(boot.function);
    const result = abi.PyObject_Call(boot.function, boot.args, boot.kwargs);
    freeBootstrap(boot);
    if (result) |r| abi.decRef(r) else reportThreadException(module, function);
    abi.decRef(function);
    abi.decRef(module);
    // Clear and delete the thread state while still holding the GIL, as CPython's thread_run does
    // with _PyThreadState_DeleteCurrent: once the GIL is released the main thread may finalize and
    // free every thread state, so a PyThreadState_Delete after PyEval_ReleaseThread can touch freed
    // memory. PyThreadState_New made `tstate` this thread's GILState state with a counter of 1, so
    // one PyGILState_Release (stable ABI) clears it, deletes it and drops the GIL in one step.
    abi.PyGILState_Release(abi.gilstate_unlocked);
}

/// What CPython's thread_run does with an exception that escapes the thread's function: SystemExit
/// ends the thread quietly, anything else goes to sys.unraisablehook.
fn reportThreadException(module: *Object, function: *Object) void {
    if (abi.PyErr_ExceptionMatches(abi.PyExc_SystemExit) != 0) {
        abi.PyErr_Clear();
        return;
    }
    // 3.10-3.12: err_msg "Exception ignored in thread started by", object=function;
    // 3.13+: the function's repr is in err_msg and object is None (test_thread asserts both).
    if (version.atLeast(13))
        errors.writeUnraisable(module, "Exception ignored in thread started by %R", function, null)
    else
        errors.writeUnraisable(module, "Exception ignored in thread started by", null, function);
}

/// `_set_sentinel()`: a new lock that zthread releases, if it is held then, when the calling thread has
/// ended (threading 3.10-3.12 acquires it at once and joins threads with it). For a thread zthread did
/// not start it is never released automatically (threading releases the main thread's own at shutdown).
pub fn setSentinel(module: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    const s = state.of(module.?);
    if (s.threads) |r| r.buryDead();
    const o = lock.newLock(s) orelse return null;
    if (handles.current) |h| {
        if (h.sentinel) |old| abi.decRef(old); // called twice: only the latest is released, as CPython
        h.sentinel = abi.newRef(o);
    }
    return o;
}

pub fn stackSize(module: ?*Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    if (args.keywordCount(kwnames) != 0) return args.noKeywords("stack_size");
    if (nargs > 1) return args.tooManyPositional("stack_size", 1, nargs);
    const stack_size_bytes = &state.of(module.?).stack_size_bytes;
    const old_size = stack_size_bytes.load(.monotonic);
    if (nargs == 1) stack_size_bytes.store(toStackSize(argv[0]) orelse return null, .monotonic);
    return abi.PyLong_FromSsize_t(@intCast(old_size));
}

/// A stack size as `stack_size(size)` takes it (0: the default), or null with CPython's error set.
fn toStackSize(o: *Object) ?usize {
    const new_size = args.toSsize(o) orelse return null;
    // 3.14+: the minimum leaves room for CPython's C-stack protection (gh-130398): three margins of
    // 2048 pointers (4096 in a debug build) and a page.
    const margin: usize = @as(usize, if (version.debug_build) 4096 else 2048) * @sizeOf(usize);
    const min_size: isize = @intCast(3 * margin + std.heap.pageSize());
    if (version.atLeast(14) and new_size != 0 and new_size < min_size) {
        _ = abi.PyErr_Format(abi.PyExc_ValueError, "size must be at least %zd bytes", min_size);
        return null;
    }
    if (new_size < 0) {
        abi.PyErr_SetString(abi.PyExc_ValueError, "size must be 0 or a positive value");
        return null;
    }
    const size: usize = @intCast(new_size);
    if (size != 0 and !core.thread.stackSizeIsValid(size)) {
        _ = abi.PyErr_Format(abi.PyExc_ValueError, "size not valid: %zd bytes", new_size);
        return null;
    }
    return size;
}

/// `_count()`: the calling interpreter's threads (this module's) that have not finished.
pub fn count(module: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    const registry = state.threadRegistry(state.of(module.?)) orelse return null;
    registry.buryDead();
    return abi.PyLong_FromSsize_t(registry.running.load(.monotonic));
}
