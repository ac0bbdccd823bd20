//! OS thread names: `set_name(name)` and `_get_name()` as CPython 3.14 has them, on every version.
const std = @import("std");
const core = @import("core");
const abi = @import("abi.zig");
const args = @import("args.zig");

const Object = abi.Object;

/// `set_name(name)`: the name is encoded with the filesystem encoding ("replace" errors) and cut to the
/// OS limit (`_NAME_MAXLEN` bytes), as CPython 3.14 does: even inside a UTF-8 sequence (`_get_name()`
/// then shows the cut bytes as surrogates, which test_threading expects).
pub fn setName(_: ?*Object, argv: [*]const *Object, nargs: isize, kwnames: ?*Object) callconv(.c) ?*Object {
    var values = [_]?*Object{null};
    if (!args.parseKeywords("set_name", &.{"name"}, 1, argv, nargs, kwnames, &values)) return null;
    const name = values[0].?;
    if (!abi.isUnicode(name)) {
        const tp_name = args.argTypeName(name) orelse return null;
        defer abi.decRef(tp_name);
        _ = abi.PyErr_Format(abi.PyExc_TypeError, "set_name() argument 'name' must be str, not %U", tp_name);
        return null;
    }
    const encoding = fsEncoding() orelse return null;
    defer abi.decRef(encoding);
    const encoding_utf8 = abi.PyUnicode_AsUTF8AndSize(encoding, null) orelse return null;
    const encoded = abi.PyUnicode_AsEncodedString(name, encoding_utf8, "replace") orelse return null;
    defer abi.decRef(encoded);
    var buf: [core.thread.name_max_bytes + 1]u8 = undefined;
    const bytes = abi.PyBytes_AsString(encoded) orelse return null;
    const len: usize = @intCast(abi.PyBytes_Size(encoded));
    const n = @min(len, core.thread.name_max_bytes);
    @memcpy(buf[0..n], bytes[0..n]);
    buf[n] = 0;
    core.thread.setCurrentName(buf[0..n :0]) catch |e| {
        _ = abi.PyErr_Format(abi.PyExc_OSError, "could not set the thread name: %s", @errorName(e).ptr);
        return null;
    };
    return abi.none();
}

fn fsEncoding() ?*Object {
    const f = abi.PySys_GetObject("getfilesystemencoding") orelse {
        abi.PyErr_SetString(abi.PyExc_RuntimeError, "lost sys.getfilesystemencoding");
        return null;
    };
    return abi.PyObject_CallFunctionObjArgs(f, @as(?*Object, null));
}

pub fn getName(_: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    var buf: [core.thread.name_max_bytes + 1]u8 = undefined;
    const name = core.thread.currentName(&buf) catch |e| {
        _ = abi.PyErr_Format(abi.PyExc_OSError, "could not read the thread name: %s", @errorName(e).ptr);
        return null;
    };
    return abi.PyUnicode_DecodeFSDefault(name.ptr);
}

pub fn addConstants(module: *Object) bool {
    const maxlen = abi.PyLong_FromSsize_t(core.thread.name_max_bytes) orelse return false;
    defer abi.decRef(maxlen);
    return abi.PyModule_AddObjectRef(module, "_NAME_MAXLEN", maxlen) == 0;
}
