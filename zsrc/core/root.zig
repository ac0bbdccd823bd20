//! zthread's core: OS primitives with no Python in them. `zig build test` runs the tests of every file here.
pub const clock = @import("clock.zig");
pub const futex = @import("futex.zig");
pub const Lock = @import("lock.zig").Lock;
pub const RecursiveLock = @import("rlock.zig").RecursiveLock;
pub const thread = @import("thread.zig");
pub const spin = @import("spin.zig");
pub const handover = @import("handover.zig");
pub const fork = @import("fork.zig");
pub const Event = @import("event.zig").Event;

test {
    _ = clock;
    _ = futex;
    _ = @import("lock.zig");
    _ = @import("rlock.zig");
    _ = thread;
    _ = spin;
    _ = handover;
    _ = fork;
    _ = @import("event.zig");
}
