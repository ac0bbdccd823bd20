//! The C ABI (`zthread._zthread._C_API`, a capsule): native code creates, acquires (with a timeout, without
//! the GIL) and releases the same lock objects Python code uses, and starts OS threads. The layout is
//! zthread/include/zthread.h's `zthread_CAPI`, version 1; it only ever grows at the end.
const std = @import("std");
const core = @import("core");
const abi = @import("abi.zig");
const lock = @import("lock.zig");
const state = @import("state.zig");

const Object = abi.Object;

pub const version = 1;
pub const capsule_name = "zthread._zthread._C_API";

const NativeFn = *const fn (?*anyopaque) callconv(.c) void;

/// zthread.h's `zthread_CAPI`, field for field.
pub const Api = extern struct {
    version: c_uint,
    size: c_uint,
    lock_new: *const fn (*const Api) callconv(.c) ?*Object,
    lock_check: *const fn (?*Object) callconv(.c) c_int,
    lock_acquire: *const fn (*Object, c_longlong) callconv(.c) c_int,
    lock_release: *const fn (*Object) callconv(.c) c_int,
    lock_locked: *const fn (*Object) callconv(.c) c_int,
    thread_start: *const fn (?NativeFn, ?*anyopaque, usize, ?*c_ulonglong) callconv(.c) c_int,
    get_ident: *const fn () callconv(.c) c_ulonglong,
    get_native_id: *const fn () callconv(.c) c_ulonglong,
};

/// The struct is the module state's `capi` field, one per module (interpreter): `lock_new` finds the
/// state, and so this interpreter's lock type, from it.
fn lockNew(api: *const Api) callconv(.c) ?*Object {
    const s: *state.State = @constCast(@fieldParentPtr("capi", api));
    return lock.newLock(s);
}

fn lockCheck(o: ?*Object) callconv(.c) c_int {
    const obj = o orelse return 0;
    return @intFromBool(lock.isLock(obj));
}

fn lockAcquire(o: *Object, timeout_ns: c_longlong) callconv(.c) c_int {
    const l = lock.coreLock(o);
    if (timeout_ns == 0) return @intFromBool(l.tryAcquireIfFree());
    const deadline: core.clock.Deadline = if (timeout_ns < 0) .forever else .fromTimeout(@intCast(timeout_ns));
    return @intFromBool(l.acquireUninterrupted(deadline, 0)); // no Python handler can run without the GIL
}

fn lockRelease(o: *Object) callconv(.c) c_int {
    lock.coreLock(o).release() catch return -1;
    return 0;
}

fn lockLocked(o: *Object) callconv(.c) c_int {
    return @intFromBool(lock.coreLock(o).isLocked());
}

const NativeStart = struct { function: NativeFn, arg: ?*anyopaque };

fn runNative(start: *NativeStart) void {
    const s = start.*;
    std.heap.c_allocator.destroy(start);
    s.function(s.arg);
}

fn threadStart(function: ?NativeFn, arg: ?*anyopaque, stack_size: usize, ident: ?*c_ulonglong) callconv(.c) c_int {
    const f = function orelse return -1;
    if (stack_size != 0 and !core.thread.stackSizeIsValid(stack_size)) return -1;
    const start = std.heap.c_allocator.create(NativeStart) catch return -1;
    start.* = .{ .function = f, .arg = arg };
    const thread = core.thread.spawn(NativeStart, runNative, start, stack_size) catch {
        std.heap.c_allocator.destroy(start);
        return -1;
    };
    if (ident) |p| p.* = thread.ident();
    thread.detach();
    return 0;
}

fn getIdent() callconv(.c) c_ulonglong {
    return core.thread.currentIdent();
}

fn getNativeId() callconv(.c) c_ulonglong {
    return core.thread.currentNativeId();
}

/// The capsule holds the module (its context), whose state holds the table: the pointer stays valid for as
/// long as anyone holds the capsule.
fn destroyCapsule(capsule: *Object) callconv(.c) void {
    const module: ?*Object = @ptrCast(@alignCast(abi.PyCapsule_GetContext(capsule)));
    if (module == null) abi.PyErr_Clear();
    abi.xDecRef(module);
}

/// Fills the module state's table and adds `_C_API`, a capsule pointing at it, to the module.
pub fn addCapsule(module: *Object, s: *state.State) bool {
    s.capi = .{
        .version = version,
        .size = @sizeOf(Api),
        .lock_new = lockNew,
        .lock_check = lockCheck,
        .lock_acquire = lockAcquire,
        .lock_release = lockRelease,
        .lock_locked = lockLocked,
        .thread_start = threadStart,
        .get_ident = getIdent,
        .get_native_id = getNativeId,
    };
    const capsule = abi.PyCapsule_New(&s.capi, capsule_name, destroyCapsule) orelse return false;
    defer abi.decRef(capsule);
    if (abi.PyCapsule_SetContext(capsule, abi.newRef(module)) != 0) {
        abi.decRef(module);
        return false;
    }
    return abi.PyModule_AddObjectRef(module, "_C_API", capsule) == 0;
}
