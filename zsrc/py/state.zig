//! Per-module state: each interpreter that imports zthread gets its own type objects.
const abi = @import("abi.zig");

const Object = abi.Object;

pub const State = extern struct {
    lock_type: ?*Object,
    handle_type: ?*Object,
    /// False in a subinterpreter configured without threads (3.13+: read from `_interpreters`).
    threads_allowed: bool,

    /// The fields that hold references.
    pub const fields = .{ "lock_type", "handle_type" };
};

pub inline fn of(module: *Object) *State {
    return @ptrCast(@alignCast(abi.PyModule_GetState(module).?));
}

pub fn lockType(module: *Object) *abi.TypeObject {
    return @ptrCast(of(module).lock_type.?);
}

pub fn handleType(module: *Object) *abi.TypeObject {
    return @ptrCast(of(module).handle_type.?);
}
