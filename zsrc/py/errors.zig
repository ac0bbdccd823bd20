//! Exceptions that cannot propagate to a caller: saved and restored around cleanup, or reported to
//! `sys.unraisablehook` as CPython's own `_PyErr_WriteUnraisableMsg` would.
const abi = @import("abi.zig");
const state = @import("state.zig");

const Object = abi.Object;

pub const Saved = [3]?*Object;

/// Takes the current exception (if any) out of the way, e.g. while cleanup code runs.
pub fn save() Saved {
    var e: Saved = .{ null, null, null };
    abi.PyErr_Fetch(&e[0], &e[1], &e[2]);
    return e;
}

pub fn restore(e: Saved) void {
    abi.PyErr_Restore(e[0], e[1], e[2]);
}

/// Reports the current exception to sys.unraisablehook with CPython's `err_msg` and `object` fields
/// (the default hook prints "<err_msg>: <object>" and the traceback). Clears the exception.
/// `err_msg` is `msg_format` with `msg_arg` for its one %R, or `msg_format` as it is when `msg_arg` is
/// null; it is built only once the exception is out of the way (as CPython's PyErr_FormatUnraisable
/// does: no Python code, such as a __repr__, may run with an exception set). If building it fails,
/// `err_msg` is None. `module`: zthread's module of the calling interpreter, whose state caches the hook's
/// argument type.
pub fn writeUnraisable(module: *Object, msg_format: [*:0]const u8, msg_arg: ?*Object, object: ?*Object) void {
    // Where the ABI has CPython's own call, it does all of this. (Without a GIL the hook swap below, which
    // learns the hook's argument type, could catch another thread's report.)
    if (abi.formatUnraisable) |format| if (object == null) {
        return if (msg_arg) |arg| format(msg_format, arg) else format("%s", msg_format);
    };
    var exc: Saved = save();
    abi.PyErr_NormalizeException(&exc[0], &exc[1], &exc[2]);
    if (exc[1] != null and exc[2] != null) _ = abi.PyException_SetTraceback(exc[1].?, exc[2].?);
    defer for (exc) |o| abi.xDecRef(o);
    const err_msg = (if (msg_arg) |arg| abi.PyUnicode_FromFormat(msg_format, arg) else abi.PyUnicode_FromString(msg_format)) orelse blk: {
        abi.PyErr_Clear();
        break :blk null;
    };
    defer abi.xDecRef(err_msg);
    const hook_args_type = unraisableArgsType(module) orelse return fallback(exc, object);
    const fields = [5]?*Object{ exc[0], exc[1], exc[2], err_msg, object };
    var items: [5]*Object = undefined;
    for (fields, &items) |f, *item| item.* = f orelse abi.noneObject();
    const tuple = abi.PyTuple_Pack(5, items[0], items[1], items[2], items[3], items[4]) orelse return fallback(exc, object);
    defer abi.decRef(tuple);
    const hook_args = abi.PyObject_CallFunctionObjArgs(hook_args_type, tuple, @as(?*Object, null)) orelse return fallback(exc, object);
    defer abi.decRef(hook_args);
    const hook = abi.sysAttr("unraisablehook") orelse return fallback(exc, object);
    defer abi.decRef(hook);
    const result = abi.PyObject_CallFunctionObjArgs(hook, hook_args, @as(?*Object, null)) orelse
        return abi.PyErr_WriteUnraisable(hook);
    abi.decRef(result);
}

/// If the hook cannot be called as CPython would, still report: with CPython's generic message.
fn fallback(exc: Saved, object: ?*Object) void {
    abi.PyErr_Clear();
    for (exc) |o| if (o) |p| abi.incRef(p);
    restore(exc);
    abi.PyErr_WriteUnraisable(object);
}

/// `UnraisableHookArgs`, the structseq type the default hook insists on. `sys` does not expose it, so it is
/// learnt once per interpreter (module state) from a call of the hook itself, with a capturing hook swapped
/// in, bound to the module.
fn captureHookArgs(module: ?*Object, hook_args: *Object) callconv(.c) ?*Object {
    const s = state.of(module.?);
    if (s.unraisable_args_type == null) s.unraisable_args_type = abi.newRef(abi.typeObject(abi.typeOf(hook_args)));
    return abi.none();
}

var capture_def: abi.MethodDef = .{ .ml_name = "capture", .ml_meth = @ptrCast(&captureHookArgs), .ml_flags = abi.METH_O, .ml_doc = null };

fn unraisableArgsType(module: *Object) ?*Object {
    const s = state.of(module);
    if (s.unraisable_args_type) |t| return t;
    const saved = save();
    defer restore(saved);
    const capture = abi.PyCFunction_NewEx(&capture_def, module, null) orelse return null;
    defer abi.decRef(capture);
    const user_hook = abi.sysAttr("unraisablehook") orelse return null;
    defer abi.decRef(user_hook);
    if (abi.PySys_SetObject("unraisablehook", capture) != 0) return null;
    abi.PyErr_SetNone(abi.PyExc_RuntimeError);
    abi.PyErr_WriteUnraisable(null);
    _ = abi.PySys_SetObject("unraisablehook", user_hook);
    return s.unraisable_args_type;
}

/// True, with CPython's exception set (RuntimeError, from 3.13 PythonFinalizationError), if the
/// interpreter is shutting down: what `sys.is_finalizing()` reports, the only view of it the stable ABI
/// gives. Also true (with that error) if the check itself failed.
pub fn refuseAtShutdown(msg: [*:0]const u8) bool {
    const is_finalizing = abi.sysAttr("is_finalizing") orelse return false;
    defer abi.decRef(is_finalizing);
    const r = abi.PyObject_CallFunctionObjArgs(is_finalizing, @as(?*Object, null)) orelse return true;
    defer abi.decRef(r);
    if (r != abi.trueObject()) return false;
    const exc_type = finalizationError();
    defer abi.decRef(exc_type);
    abi.PyErr_SetString(exc_type, msg);
    return true;
}

fn finalizationError() *Object {
    if (@import("version.zig").atLeast(13)) {
        if (abi.PyImport_ImportModule("builtins")) |builtins| {
            defer abi.decRef(builtins);
            if (abi.PyObject_GetAttrString(builtins, "PythonFinalizationError")) |t| return t;
        }
        abi.PyErr_Clear();
    }
    return abi.newRef(abi.PyExc_RuntimeError);
}
