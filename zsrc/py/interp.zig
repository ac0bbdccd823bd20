//! What zthread knows of the interpreter that calls it: which one it is, and whether it may start threads.
const abi = @import("abi.zig");
const errors = @import("errors.zig");
const version = @import("version.zig");

const Object = abi.Object;

pub fn current() *abi.InterpreterState {
    return abi.PyThreadState_GetInterpreter(abi.PyThreadState_Get());
}

/// The calling interpreter's id: 0 for the main interpreter.
pub fn currentId() i64 {
    return abi.PyInterpreterState_GetID(current());
}

pub fn isMain() bool {
    return currentId() == 0;
}

/// Whether the calling interpreter may start threads (CPython refuses them in a subinterpreter configured
/// with `allow_threads=False`). The main interpreter always may. 3.13+ say so in `_interpreters.get_config()`.
/// 3.12 exposes the flag nowhere: zthread allows threads there (docs/DESIGN.md). The one oracle, CPython's
/// own `start_new_thread`, cannot be asked without a thread starting: made to fail after its check (a stack
/// size no thread can have), 3.12.1 leaves the failed thread's state in the interpreter, which then aborts
/// when it is closed ("Py_EndInterpreter: not the last thread").
pub fn threadsAllowed() bool {
    if (!version.atLeast(13) or isMain()) return true;
    const saved = errors.save();
    defer errors.restore(saved);
    const allowed = fromConfig();
    abi.PyErr_Clear(); // an answer that could not be had is "allowed", as before 3.13
    return allowed orelse true;
}

fn fromConfig() ?bool {
    const interpreters = abi.PyImport_ImportModule("_interpreters") orelse return null;
    defer abi.decRef(interpreters);
    const get_current = abi.PyObject_GetAttrString(interpreters, "get_current") orelse return null;
    defer abi.decRef(get_current);
    const cur = abi.PyObject_CallFunctionObjArgs(get_current, @as(?*Object, null)) orelse return null;
    defer abi.decRef(cur);
    const id = (if (abi.isTuple(cur)) abi.PyTuple_GetItem(cur, 0) else cur) orelse return null;
    const get_config = abi.PyObject_GetAttrString(interpreters, "get_config") orelse return null;
    defer abi.decRef(get_config);
    const config = abi.PyObject_CallFunctionObjArgs(get_config, id, @as(?*Object, null)) orelse return null;
    defer abi.decRef(config);
    const allow = abi.PyObject_GetAttrString(config, "allow_threads") orelse return null;
    defer abi.decRef(allow);
    const truth = abi.PyObject_IsTrue(allow);
    return if (truth < 0) null else truth != 0;
}
