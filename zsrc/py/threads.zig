//! Starting Python threads on the core's OS threads: `start_new_thread`, `stack_size`, `_count`, and
//! the reporting of exceptions that escape a thread.
const std = @import("std");
const core = @import("core");
const abi = @import("abi.zig");
const args = @import("args.zig");
const version = @import("version.zig");

const Object = abi.Object;

/// `stack_size()`: the size requested for new threads, 0 for the default. CPython keeps it per
/// interpreter; zthread keeps one per process.
var stack_size_bytes = std.atomic.Value(usize).init(0);

/// `_count()`: threads started by this module that have not finished.
var running_count = std.atomic.Value(isize).init(0);

/// What a new thread needs to run `function(*args, **kwargs)`; owned by the new thread once started.
const Bootstrap = struct {
    interp: *abi.InterpreterState,
    function: *Object,
    args: *Object,
    kwargs: ?*Object,
};

pub fn startNewThread(_: ?*Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    if (args.keywordCount(kwnames) != 0) return args.noKeywords("start_new_thread");
    if (nargs < 2) return argCountError("least", 2, nargs);
    if (nargs > 3) return argCountError("most", 3, nargs);
    const function = argv[0];
    const call_args = argv[1];
    const kwargs: ?*Object = if (nargs == 3) argv[2] else null;
    if (abi.PyCallable_Check(function) == 0) return typeError("first arg must be callable");
    if (!abi.isTuple(call_args)) return typeError("2nd arg must be a tuple");
    if (kwargs) |kw| if (!abi.isDict(kw)) return typeError("optional 3rd arg must be a dictionary");
    const ident = spawn(function, call_args, kwargs) orelse return null;
    return abi.PyLong_FromUnsignedLongLong(ident);
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

/// Starts a detached OS thread running the call; returns its ident, or null with RuntimeError set.
fn spawn(function: *Object, call_args: *Object, kwargs: ?*Object) ?u64 {
    const boot = std.heap.c_allocator.create(Bootstrap) catch {
        _ = abi.PyErr_NoMemory();
        return null;
    };
    boot.* = .{
        .interp = abi.PyThreadState_GetInterpreter(abi.PyThreadState_Get()),
        .function = abi.newRef(function),
        .args = abi.newRef(call_args),
        .kwargs = if (kwargs) |kw| abi.newRef(kw) else null,
    };
    _ = running_count.fetchAdd(1, .monotonic);
    const thread = core.thread.spawn(Bootstrap, run, boot, stack_size_bytes.load(.monotonic)) catch {
        _ = running_count.fetchSub(1, .monotonic);
        freeBootstrap(boot);
        abi.PyErr_SetString(abi.PyExc_RuntimeError, "can't start new thread");
        return null;
    };
    const ident = thread.ident();
    thread.detach();
    return ident;
}

fn freeBootstrap(boot: *Bootstrap) void {
    abi.decRef(boot.function);
    abi.decRef(boot.args);
    abi.xDecRef(boot.kwargs);
    std.heap.c_allocator.destroy(boot);
}

/// The new thread's body: a thread state of its own in the creator's interpreter, the call, then the
/// thread state's teardown. Runs no Python without holding the GIL.
fn run(boot: *Bootstrap) void {
    defer _ = running_count.fetchSub(1, .monotonic);
    // PyThreadState_New needs no GIL; it fails only when out of memory, and then no Python object can
    // be touched here: the references in `boot` are leaked rather than released without the GIL.
    const tstate = abi.PyThreadState_New(boot.interp) orelse return;
    abi.PyEval_AcquireThread(tstate);
    const function = abi.newRef(boot.function);
    const result = abi.PyObject_Call(boot.function, boot.args, boot.kwargs);
    freeBootstrap(boot);
    if (result) |r| abi.decRef(r) else reportThreadException(function);
    abi.decRef(function);
    abi.PyThreadState_Clear(tstate);
    abi.PyEval_ReleaseThread(tstate);
    abi.PyThreadState_Delete(tstate);
}

/// What CPython's thread_run does with an exception that escapes the thread's function: SystemExit
/// ends the thread quietly, anything else goes to sys.unraisablehook.
fn reportThreadException(function: *Object) void {
    if (abi.PyErr_ExceptionMatches(abi.PyExc_SystemExit) != 0) {
        abi.PyErr_Clear();
        return;
    }
    var exc_type: ?*Object = null;
    var exc_value: ?*Object = null;
    var exc_tb: ?*Object = null;
    abi.PyErr_Fetch(&exc_type, &exc_value, &exc_tb);
    abi.PyErr_NormalizeException(&exc_type, &exc_value, &exc_tb);
    if (exc_value != null and exc_tb != null) _ = abi.PyException_SetTraceback(exc_value.?, exc_tb.?);
    defer {
        abi.xDecRef(exc_type);
        abi.xDecRef(exc_value);
        abi.xDecRef(exc_tb);
    }
    // 3.10-3.12: err_msg "Exception ignored in thread started by", object=function;
    // 3.13+: the function's repr is in err_msg and object is None (test_thread asserts both).
    const err_msg = if (version.atLeast(13))
        abi.PyUnicode_FromFormat("Exception ignored in thread started by %R", function)
    else
        abi.PyUnicode_FromString("Exception ignored in thread started by");
    const object = if (version.atLeast(13)) abi.none() else abi.newRef(function);
    defer abi.decRef(object);
    const msg = err_msg orelse return abi.PyErr_WriteUnraisable(function);
    defer abi.decRef(msg);
    callUnraisableHook(.{ exc_type, exc_value, exc_tb, msg, object }, function);
}

/// Calls sys.unraisablehook with a real `UnraisableHookArgs` (the default hook accepts nothing else).
/// The structseq type is not exposed by `sys`: learn it once from a call of the hook itself.
fn callUnraisableHook(fields: [5]?*Object, function: *Object) void {
    const hook_args_type = unraisableArgsType() orelse return abi.PyErr_WriteUnraisable(function);
    var items: [5]*Object = undefined;
    for (fields, &items) |f, *item| item.* = f orelse &abi._Py_NoneStruct;
    const hook_args = abi.PyObject_CallFunctionObjArgs(hook_args_type, tuplePack(items) orelse return abi.PyErr_WriteUnraisable(function), @as(?*Object, null)) orelse
        return abi.PyErr_WriteUnraisable(function);
    defer abi.decRef(hook_args);
    const hook = abi.PySys_GetObject("unraisablehook") orelse return abi.PyErr_WriteUnraisable(function);
    const result = abi.PyObject_CallFunctionObjArgs(hook, hook_args, @as(?*Object, null)) orelse
        return abi.PyErr_WriteUnraisable(hook);
    abi.decRef(result);
}

fn tuplePack(items: [5]*Object) ?*Object {
    return abi.PyTuple_Pack(5, items[0], items[1], items[2], items[3], items[4]);
}

var unraisable_args_type: ?*Object = null;

fn captureHookArgs(_: ?*Object, hook_args: *Object) callconv(.c) ?*Object {
    unraisable_args_type = abi.newRef(abi.typeObject(hook_args.ob_type));
    return abi.none();
}

var capture_def: abi.MethodDef = .{ .ml_name = "capture", .ml_meth = @ptrCast(&captureHookArgs), .ml_flags = abi.METH_O, .ml_doc = null };

fn unraisableArgsType() ?*Object {
    if (unraisable_args_type) |t| return t;
    const saved_exc = saveError();
    defer restoreError(saved_exc);
    const capture = abi.PyCFunction_NewEx(&capture_def, null, null) orelse return null;
    defer abi.decRef(capture);
    const user_hook = abi.PySys_GetObject("unraisablehook") orelse return null;
    abi.incRef(user_hook);
    defer abi.decRef(user_hook);
    if (abi.PySys_SetObject("unraisablehook", capture) != 0) return null;
    abi.PyErr_SetNone(abi.PyExc_RuntimeError);
    abi.PyErr_WriteUnraisable(null);
    _ = abi.PySys_SetObject("unraisablehook", user_hook);
    return unraisable_args_type;
}

const SavedError = [3]?*Object;

fn saveError() SavedError {
    var e: SavedError = .{ null, null, null };
    abi.PyErr_Fetch(&e[0], &e[1], &e[2]);
    return e;
}

fn restoreError(e: SavedError) void {
    abi.PyErr_Restore(e[0], e[1], e[2]);
}

pub fn stackSize(_: ?*Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    if (args.keywordCount(kwnames) != 0) return args.noKeywords("stack_size");
    if (nargs > 1) return args.tooManyPositional("stack_size", 1, nargs);
    const old_size = stack_size_bytes.load(.monotonic);
    if (nargs == 1) {
        const new_size = args.toSsize(argv[0]) orelse return null;
        if (new_size < 0) {
            abi.PyErr_SetString(abi.PyExc_ValueError, "size must be 0 or a positive value");
            return null;
        }
        const size: usize = @intCast(new_size);
        if (size != 0 and !core.thread.stackSizeIsValid(size)) {
            _ = abi.PyErr_Format(abi.PyExc_ValueError, "size not valid: %zd bytes", new_size);
            return null;
        }
        stack_size_bytes.store(size, .monotonic);
    }
    return abi.PyLong_FromSsize_t(@intCast(old_size));
}

pub fn count(_: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    return abi.PyLong_FromSsize_t(running_count.load(.monotonic));
}
