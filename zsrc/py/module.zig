//! `zthread._zthread`: CPython's `_thread` API over zthread's core. Module init, and the small
//! module-level functions; the lock type lives in lock.zig, thread start in threads.zig.
const std = @import("std");
const builtin = @import("builtin");
const core = @import("core");
const abi = @import("abi.zig");
const args = @import("args.zig");
const capi = @import("capi.zig");
const lock = @import("lock.zig");
const rlock = @import("rlock.zig");
const local = @import("local.zig");
const threads = @import("threads.zig");
const handles = @import("handles.zig");
const interp = @import("interp.zig");
const errors = @import("errors.zig");
const names = @import("names.zig");
const state = @import("state.zig");
const version = @import("version.zig");
const wait = @import("wait.zig");

const Object = abi.Object;

/// A panic (a bug in zthread) prints one line and aborts the process. std's default handlers pull in
/// std.Io (~100 libc imports) to write to stderr; one write(2) is all this needs.
pub const panic = std.debug.FullPanic(fatal);

fn fatal(msg: []const u8, _: ?usize) noreturn {
    @branchHint(.cold);
    writeStderr("zthread: fatal error: ");
    writeStderr(msg);
    writeStderr("\n");
    std.c.abort();
}

extern "c" fn _write(fd: c_int, buf: [*]const u8, len: c_uint) c_int;

fn writeStderr(bytes: []const u8) void {
    if (@import("builtin").os.tag == .windows) {
        _ = _write(2, bytes.ptr, @intCast(bytes.len));
    } else {
        _ = std.c.write(2, bytes.ptr, bytes.len);
    }
}

fn getIdent(_: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    return abi.PyLong_FromUnsignedLongLong(core.thread.currentIdent());
}

fn getNativeId(_: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    return abi.PyLong_FromUnsignedLongLong(core.thread.currentNativeId());
}

fn allocateLock(module: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    return lock.newLock(state.of(module.?));
}

/// The ident of the thread that first imported zthread in the main interpreter, or, where the OS tells, of
/// the process's initial thread when it imports first (CPython: `_PyRuntime.main_thread`). Process-wide;
/// interpreters with GILs of their own may import at the same time: set once, by a compare-and-swap.
var main_thread_ident = std.atomic.Value(u64).init(0);

fn noteMainThread(interp_id: i64) void {
    if (main_thread_ident.load(.monotonic) != 0) return;
    // The process's initial thread; where the OS cannot tell, a thread importing in the main interpreter.
    if (!(core.thread.isProcessMainThread() orelse (interp_id == 0))) return;
    _ = main_thread_ident.cmpxchgStrong(0, core.thread.currentIdent(), .monotonic, .monotonic);
}

/// Windows: Ctrl-C and Ctrl-Break end the main thread's zthread waits (locks, RLocks, joins), as signals do
/// on POSIX, on every CPython version (see core.futex.console). The console handler first makes Python see
/// the signal (PyErr_SetInterruptEx, callable from any thread without the GIL), then wakes the main thread,
/// whose wait returns `.interrupted`: the wait runs Python's handlers (KeyboardInterrupt) and goes on if
/// none raised. Python runs signal handlers in the main thread only, so only its waits are interruptible.
fn enableConsoleInterrupts() void {
    if (builtin.os.tag != .windows) return;
    if (core.thread.currentIdent() == main_thread_ident.load(.monotonic)) core.futex.console.interruptible = true;
    // Once per process, whichever interpreter imports first.
    if (console_handler_installed.swap(true, .acq_rel)) return;
    if (!core.futex.console.install(onConsoleEvent)) console_handler_installed.store(false, .release);
}

var console_handler_installed = std.atomic.Value(bool).init(false);

fn onConsoleEvent(event: u32) void {
    if (abi.Py_IsInitialized() == 0) return; // finalized: nobody to tell
    const sigint = 2;
    const sigbreak = 21; // the MSVC CRT's SIGBREAK
    _ = abi.PyErr_SetInterruptEx(if (event == core.futex.console.ctrl_break_event) sigbreak else sigint);
}

/// In a forked child the forking thread is the main thread (CPython resets `_PyRuntime.main_thread`).
pub fn afterForkInChild() void {
    main_thread_ident.store(core.thread.currentIdent(), .monotonic);
}

fn getMainThreadIdent(_: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    return abi.PyLong_FromUnsignedLongLong(main_thread_ident.load(.monotonic));
}

fn isMainInterpreter(_: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    return abi.boolean(interp.isMain());
}

fn exitThread(_: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    abi.PyErr_SetNone(abi.PyExc_SystemExit);
    return null;
}

/// `interrupt_main(signum=SIGINT, /)`: parsed as CPython's "|i:signum" (hence "signum() takes ...").
fn interruptMain(_: ?*Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    if (args.keywordCount(kwnames) != 0) return args.noKeywords("interrupt_main");
    if (nargs > 1) return args.tooManyPositional("signum", 1, nargs);
    const sigint = 2; // SIGINT on every platform zthread supports, Windows included
    const signum: c_int = if (nargs == 1) args.toCInt(argv[0]) orelse return null else sigint;
    if (abi.PyErr_SetInterruptEx(signum) != 0) {
        abi.PyErr_SetString(abi.PyExc_ValueError, "signal number out of range");
        return null;
    }
    return abi.none();
}

const fastcall_kw = abi.METH_FASTCALL | abi.METH_KEYWORDS;

fn method(comptime name: [*:0]const u8, comptime f: anytype, flags: c_int, comptime doc: [*:0]const u8) abi.MethodDef {
    return .{ .ml_name = name, .ml_meth = @ptrCast(&f), .ml_flags = flags, .ml_doc = doc };
}

const start_new_thread_doc =
    \\start_new_thread($module, function, args, kwargs={}, /)
    \\--
    \\
    \\Start a new thread and return its identifier.
    \\
    \\The thread will call the function with positional arguments from the
    \\tuple args and keyword arguments taken from the optional dictionary
    \\kwargs.  The thread exits when the function returns; the return value
    \\is ignored.  The thread will also exit when the function raises an
    \\unhandled exception; a stack trace will be printed unless the exception
    \\is SystemExit.
;
const allocate_lock_doc = "allocate_lock($module, /)\n--\n\nCreate a new lock object. See help(type(threading.Lock())) for\ninformation about locks.";
const exit_doc = "exit($module, /)\n--\n\nThis is synonymous to ``raise SystemExit''.  It will cause the current\nthread to exit silently unless the exception is caught.";
const get_ident_doc =
    \\get_ident($module, /)
    \\--
    \\
    \\Return a non-zero integer that uniquely identifies the current thread
    \\amongst other threads that exist simultaneously.
    \\This may be used to identify per-thread resources.
    \\Even though on some platforms threads identities may appear to be
    \\allocated consecutive numbers starting at 1, this behavior should not
    \\be relied upon, and the number should be seen purely as a magic cookie.
    \\A thread's identity may be reused for another thread after it exits.
;
const get_native_id_doc = "get_native_id($module, /)\n--\n\nReturn a non-negative integer identifying the thread as reported\nby the OS (kernel). This may be used to uniquely identify a\nparticular thread within a system.";
const stack_size_doc =
    \\stack_size($module, size=0, /)
    \\--
    \\
    \\Return the thread stack size used when creating new threads.  The
    \\optional size argument specifies the stack size (in bytes) to be used
    \\for subsequently created threads, and must be 0 (use platform or
    \\configured default) or a positive integer value of at least 32,768 (32k).
    \\If changing the thread stack size is unsupported, a ThreadError
    \\exception is raised.  If the specified size is invalid, a ValueError
    \\exception is raised, and the stack size is unmodified.  32k bytes
    \\ currently the minimum supported stack size value to guarantee
    \\sufficient stack space for the interpreter itself.
;
const interrupt_main_doc = "interrupt_main($module, signum=2, /)\n--\n\nSimulate the arrival of the given signal in the main thread,\nwhere the corresponding signal handler will be executed.\nIf *signum* is omitted, SIGINT is assumed.\nA subthread can use this function to interrupt the main thread.";

var functions = [_]abi.MethodDef{
    method("start_new_thread", threads.startNewThread, fastcall_kw, start_new_thread_doc),
    method("start_new", threads.startNewThread, fastcall_kw, "start_new($module, function, args, kwargs={}, /)\n--\n\nAn obsolete synonym of start_new_thread()."),
    args.noArgsMethod("_thread", "allocate_lock", allocateLock, allocate_lock_doc),
    args.noArgsMethod("_thread", "allocate", allocateLock, "allocate($module, /)\n--\n\nAn obsolete synonym of allocate_lock()."),
    args.noArgsMethod("_thread", "exit_thread", exitThread, "exit_thread($module, /)\n--\n\nAn obsolete synonym of exit()."),
    args.noArgsMethod("_thread", "exit", exitThread, exit_doc),
    method("interrupt_main", interruptMain, fastcall_kw, interrupt_main_doc),
    args.noArgsMethod("_thread", "get_ident", getIdent, get_ident_doc),
    args.noArgsMethod("_thread", "get_native_id", getNativeId, get_native_id_doc),
    args.noArgsMethod("_thread", "_count", threads.count, "_count($module, /)\n--\n\nReturn the number of currently running Python threads, excluding\nthe main thread."),
    method("stack_size", threads.stackSize, fastcall_kw, stack_size_doc),
    method("start_joinable_thread", threads.startJoinableThread, fastcall_kw, "start_joinable_thread($module, /, function, handle=None, daemon=True)\n--\n\n*For internal use only*: start a new thread.\n\nLike start_new_thread(), this starts a new thread calling the given function.\nUnlike start_new_thread(), this returns a handle object with methods to join\nor detach the given thread.\nThis function is not for third-party code, please use the\n`threading` module instead. During finalization the daemon parameter\nis ignored and the thread is joined."),
    method("_start_thread", threads.startThread, fastcall_kw, "_start_thread($module, /, function, stack_size=0, daemon=True)\n--\n\nzthread only, for zthread.start_thread(): start_joinable_thread() with the new\nthread's own stack size (0: the platform's default), whatever stack_size() says."),
    method("_make_thread_handle", handles.makeThreadHandle, abi.METH_O, "_make_thread_handle($module, ident, /)\n--\n\nInternal only. Make a thread handle for threads not spawned\nby the _thread or threading module."),
    args.noArgsMethod("_thread", "_shutdown", handles.shutdown, "_shutdown($module, /)\n--\n\nWait for all non-daemon threads (other than the calling thread) to stop."),
    args.noArgsMethod("_thread", "_set_sentinel", threads.setSentinel, "_set_sentinel($module, /)\n--\n\nSet a sentinel lock that will be released when the current thread\nstate is finalized (for threading on CPython 3.10-3.12)."),
    args.noArgsMethod("_thread", "_get_main_thread_ident", getMainThreadIdent, "_get_main_thread_ident($module, /)\n--\n\nInternal only. Return a non-zero integer that uniquely identifies the main thread\nof the main interpreter."),
    args.noArgsMethod("_thread", "_is_main_interpreter", isMainInterpreter, "_is_main_interpreter($module, /)\n--\n\nReturn True if the current interpreter is the main Python interpreter."),
    method("set_name", names.setName, fastcall_kw, "set_name($module, /, name)\n--\n\nSet the name of the current thread."),
    args.noArgsMethod("_thread", "_get_name", names.getName, "_get_name($module, /)\n--\n\nGet the name of the current thread."),
};

const module_doc = "This module provides primitive operations to write multi-threaded programs.\nThe 'threading' module provides a more convenient interface.";

/// Adds the functions with `__module__ == "_thread"`, so CPython's own messages about them read as
/// they do for `_thread` ("_thread.exit() takes no arguments (1 given)").
fn addFunctions(module: *Object) bool {
    for (&functions) |*def| if (!addFunction(module, def)) return false;
    return true;
}

fn addFunction(module: *Object, def: *abi.MethodDef) bool {
    const module_name = abi.PyUnicode_FromString("_thread") orelse return false;
    defer abi.decRef(module_name);
    const f = abi.PyCFunction_NewEx(def, module, module_name) orelse return false;
    defer abi.decRef(f);
    return abi.PyModule_AddObjectRef(module, def.ml_name.?, f) == 0;
}

fn exec(module: *Object) callconv(.c) c_int {
    version.detect(); // PyInit__zthread has, where there is one
    abi.initConstants();
    wait.configureHandover(); // after initConstants: abi.gilEnabled compares with True
    const s = state.of(module);
    s.* = .{};
    if (!s.keywords.init()) return -1;
    s.threads = handles.Registry.create() orelse return -1;
    if (!addFunctions(module)) return -1;
    if (abi.PyModule_AddObjectRef(module, "error", abi.PyExc_RuntimeError) != 0) return -1;
    // Instances tracked by the GC in a subinterpreter, untracked (cheaper) in the main one (abi.instanceSpec).
    s.tracked = !interp.isMain();
    s.lock_type = lock.createType(module, s.tracked) orelse return -1; // the state owns the reference
    if (!abi.learnDataOffset(state.lockType(s).?)) return -1; // abi3t: before any instance's fields are used
    if (abi.PyModule_AddObjectRef(module, "LockType", s.lock_type.?) != 0) return -1;
    if (abi.PyModule_AddObjectRef(module, "lock", s.lock_type.?) != 0) return -1;
    if (!capi.addCapsule(module, s)) return -1;
    s.handle_type = handles.createType(module, s.tracked) orelse return -1;
    if (abi.PyModule_AddObjectRef(module, "_ThreadHandle", s.handle_type.?) != 0) return -1;
    if (!names.addConstants(module)) return -1;
    s.threads_allowed = interp.threadsAllowed();
    if (!addFromCPython(module)) return -1;
    // The core's own reset of its process-wide state in a forked child (core/fork.zig), once per process.
    core.fork.install() catch {
        _ = abi.PyErr_NoMemory();
        return -1;
    };
    handles.registerForkHook(module);
    noteMainThread(interp.currentId());
    enableConsoleInterrupts();
    const rlock_type = rlock.createType(module, s.tracked) orelse return -1;
    defer abi.decRef(rlock_type);
    if (abi.PyModule_AddObjectRef(module, "RLock", rlock_type) != 0) return -1;
    const local_type = local.createType(module, s) orelse return -1;
    defer abi.decRef(local_type);
    if (abi.PyModule_AddObjectRef(module, "_local", local_type) != 0) return -1;
    const timeout_max = abi.PyFloat_FromDouble(args.timeoutMaxSeconds()) orelse return -1;
    defer abi.decRef(timeout_max);
    if (abi.PyModule_AddObjectRef(module, "TIMEOUT_MAX", timeout_max) != 0) return -1;
    return 0;
}

/// Every slot, each known from a version on: a version's definition takes those it knows (3.10 and 3.11
/// refuse a module with a slot id they do not know, even in the main interpreter).
const all_slots = [_]abi.ModuleDefSlot{
    .{ .slot = abi.Py_mod_exec, .value = @ptrCast(&exec) },
    // 3.12+: the module supports isolated interpreters with their own GIL (it keeps no process-global Python
    // object, and guards what process-global C state it has with atomics or the core's locks).
    .{ .slot = abi.Py_mod_multiple_interpreters, .value = abi.Py_MOD_PER_INTERPRETER_GIL_SUPPORTED },
    // 3.13+: nor does it need a GIL at all (free-threaded builds; the others ignore the slot).
    .{ .slot = abi.Py_mod_gil, .value = abi.Py_MOD_GIL_NOT_USED },
};

/// The first `n` slots of `all_slots`, ended as CPython expects.
fn firstSlots(comptime n: usize) [n + 1]abi.ModuleDefSlot {
    return all_slots[0..n].* ++ [_]abi.ModuleDefSlot{.{ .slot = 0, .value = null }};
}

const slots_from_3_13 = firstSlots(3);
const slots_3_12 = firstSlots(2);
const slots_until_3_11 = firstSlots(1);

/// The module's references (GC): the types, which hold the module, and the sentinel locks that ended
/// threads left to it (they hold their type, so the module).
fn traverse(module: *Object, visit: abi.VisitProc, arg: ?*anyopaque) callconv(.c) c_int {
    const s = state.of(module);
    inline for (state.State.types) |f| if (@field(s, f)) |t| {
        const rc = visit(t, arg);
        if (rc != 0) return rc;
    };
    if (s.threads) |r| return r.traverse(visit, arg);
    return 0;
}

/// Breaks the module's cycles. What instances may still use (the local registry type, the names, the
/// thread registry) stays until the module is freed: an instance holds the module until it is freed.
fn clear(module: *Object) callconv(.c) c_int {
    const s = state.of(module);
    inline for (state.State.types) |f| clearRef(&@field(s, f));
    if (s.threads) |r| r.buryDead();
    return 0;
}

fn clearRef(slot: *?*Object) void {
    const old = slot.*;
    slot.* = null;
    abi.xDecRef(old);
}

fn free(module: *Object) callconv(.c) void {
    _ = clear(module);
    const s = state.of(module);
    inline for (state.State.owned) |f| clearRef(&@field(s, f));
    s.keywords.deinit();
    if (s.threads) |r| r.decRef(); // threads still running keep it
    s.threads = null;
}

/// Names whose behaviour belongs to the interpreter, not to threads or locks, are CPython's own objects
/// where the running version has them (`_excepthook`, `_ExceptHookArgs`: the formatting of a thread's
/// uncaught exception; `daemon_threads_allowed`: the interpreter's configuration, 3.12+). Before 3.12
/// every interpreter allows daemon threads.
fn addFromCPython(module: *Object) bool {
    const cpython = abi.PyImport_ImportModule("_thread") orelse return false;
    defer abi.decRef(cpython);
    for ([_][*:0]const u8{ "_excepthook", "_ExceptHookArgs", "daemon_threads_allowed" }) |name| {
        const obj = abi.PyObject_GetAttrString(cpython, name) orelse {
            abi.PyErr_Clear();
            continue;
        };
        defer abi.decRef(obj);
        if (abi.PyModule_AddObjectRef(module, name, obj) != 0) return false;
    }
    if (!version.atLeast(12)) {
        for (&extra_functions) |*def| if (!addFunction(module, def)) return false;
    }
    return true;
}

fn daemonThreadsAllowed(_: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    return abi.boolean(true);
}

var extra_functions = [_]abi.MethodDef{
    args.noArgsMethod("_thread", "daemon_threads_allowed", daemonThreadsAllowed, "daemon_threads_allowed($module, /)\n--\n\nReturn True if daemon threads are allowed in the current interpreter,\nand False otherwise.\n"),
};

fn moduleDef(comptime slots: []const abi.ModuleDefSlot) abi.ModuleDef {
    return .{
        .m_base = abi.module_def_head_init,
        .m_name = "zthread._zthread",
        .m_doc = module_doc,
        .m_size = @sizeOf(state.State),
        .m_methods = null,
        .m_slots = slots.ptr,
        .m_traverse = @ptrCast(&traverse),
        .m_clear = @ptrCast(&clear),
        .m_free = @ptrCast(&free),
    };
}

var module_def_from_3_13 = moduleDef(&slots_from_3_13);
var module_def_3_12 = moduleDef(&slots_3_12);
var module_def_until_3_11 = moduleDef(&slots_until_3_11);

/// The definition is chosen by the running version: one cp310-abi3 binary imports on 3.10 and 3.11 (no slot
/// they do not know), in isolated interpreters from 3.12, and declares from 3.13 that it needs no GIL.
fn pyInit() callconv(.c) ?*Object {
    version.detect();
    const def = if (version.atLeast(13)) &module_def_from_3_13 else if (version.atLeast(12)) &module_def_3_12 else &module_def_until_3_11;
    return abi.PyModuleDef_Init(def);
}

/// abi3t (3.15+): the module as slots (PEP 793): the same definition as `module_def_from_3_13`, and the ABI it
/// was built for: the stable ABI of 3.15, for builds with and without the GIL.
const export_slots = [_]abi.Slot{
    .{ .id = abi.Py_mod_abi, .flags = abi.PySlot_STATIC, .value = &abi_info },
    .{ .id = abi.Py_mod_name, .flags = abi.PySlot_STATIC, .value = "zthread._zthread" },
    .{ .id = abi.Py_mod_doc, .flags = abi.PySlot_STATIC, .value = module_doc },
    .{ .id = abi.Py_mod_state_size, .value = @ptrFromInt(@sizeOf(state.State)) },
    .{ .id = abi.Py_mod_state_traverse, .value = @ptrCast(&traverse) },
    .{ .id = abi.Py_mod_state_clear, .value = @ptrCast(&clear) },
    .{ .id = abi.Py_mod_state_free, .value = @ptrCast(&free) },
    .{ .id = abi.Py_mod_exec_slot, .value = @ptrCast(&exec) },
    .{ .id = abi.Py_mod_multiple_interpreters_slot, .flags = abi.PySlot_INTPTR, .value = abi.Py_MOD_PER_INTERPRETER_GIL_SUPPORTED },
    .{ .id = abi.Py_mod_gil_slot, .flags = abi.PySlot_INTPTR, .value = abi.Py_MOD_GIL_NOT_USED },
    .{ .id = 0, .value = null },
};
const abi_info: abi.ABIInfo = .{
    .flags = abi.PyABIInfo_STABLE | abi.PyABIInfo_GIL | abi.PyABIInfo_FREETHREADED,
    .build_version = 0x030F00F0, // the headers it was written against: 3.15.0
    .abi_version = 0x030F0000, // Py_LIMITED_API / Py_TARGET_ABI3T: 3.15
};

fn modExport() callconv(.c) *const abi.Slot {
    return &export_slots[0];
}

// The module's entry point: `PyInit__zthread`, or abi3t's `PyModExport__zthread` (abi.module_by_slots).
comptime {
    if (abi.module_by_slots) {
        @export(&modExport, .{ .name = "PyModExport__zthread" });
    } else {
        @export(&pyInit, .{ .name = "PyInit__zthread" });
    }
}
