//! OS thread names: `set_name(name)` and `_get_name()` as CPython 3.14 has them, on every version.
const std = @import("std");
const builtin = @import("builtin");
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
    return if (builtin.os.tag == .windows) setNameWide(name) else setNameBytes(name);
}

/// Windows (CPython 3.14's rules there): the name as UTF-16, cut to `_NAME_MAXLEN` code units.
fn setNameWide(name: *Object) ?*Object {
    var len: isize = 0;
    const wide = abi.PyUnicode_AsWideCharString(name, &len) orelse return null;
    defer abi.PyMem_Free(wide);
    const n = @min(@as(usize, @intCast(len)), core.thread.name_max_bytes);
    wide[n] = 0;
    core.thread.setCurrentNameWide(wide[0..n :0]) catch |e| return nameError("set", e);
    return abi.none();
}

fn nameError(what: [*:0]const u8, e: core.thread.NameError) ?*Object {
    _ = abi.PyErr_Format(abi.PyExc_OSError, "could not %s the thread name: %s", what, @errorName(e).ptr);
    return null;
}

fn setNameBytes(name: *Object) ?*Object {
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
    core.thread.setCurrentName(buf[0..n :0]) catch |e| return nameError("set", e);
    return abi.none();
}

fn fsEncoding() ?*Object {
    const f = abi.sysAttr("getfilesystemencoding") orelse {
        abi.PyErr_SetString(abi.PyExc_RuntimeError, "lost sys.getfilesystemencoding");
        return null;
    };
    defer abi.decRef(f);
    return abi.PyObject_CallFunctionObjArgs(f, @as(?*Object, null));
}

pub fn getName(_: ?*Object, _: ?*Object) callconv(.c) ?*Object {
    return if (builtin.os.tag == .windows) getNameWide() else getNameBytes();
}

fn getNameWide() ?*Object {
    const name = core.thread.currentNameWide() catch |e| return nameError("read", e);
    defer name.deinit();
    return abi.PyUnicode_FromWideChar(name.ptr, -1);
}

fn getNameBytes() ?*Object {
    var buf: [core.thread.name_max_bytes + 1]u8 = undefined;
    const name = core.thread.currentName(&buf) catch |e| return nameError("read", e);
    return abi.PyUnicode_DecodeFSDefault(name.ptr);
}

pub fn addConstants(module: *Object) bool {
    const maxlen = abi.PyLong_FromSsize_t(core.thread.name_max_bytes) orelse return false;
    defer abi.decRef(maxlen);
    return abi.PyModule_AddObjectRef(module, "_NAME_MAXLEN", maxlen) == 0;
}
