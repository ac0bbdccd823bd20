//! A one-shot event: set once, waited for by any number of threads (a thread's "done" signal).
const std = @import("std");
const clock = @import("clock.zig");
const futex = @import("futex.zig");

pub const Event = extern struct {
    state: std.atomic.Value(u32) = .init(unset),

    const unset: u32 = 0;
    const is_set: u32 = 1;

    pub const WaitResult = enum { set, timed_out, interrupted };

    pub fn isSet(self: *const Event) bool {
        return self.state.load(.acquire) == is_set;
    }

    /// Sets the event and wakes every waiter. Needs no GIL: a thread calls it after its thread state is gone.
    pub fn set(self: *Event) void {
        if (self.state.swap(is_set, .release) == unset) futex.wake(&self.state, std.math.maxInt(u32));
    }

    pub fn wait(self: *Event, deadline: clock.Deadline) WaitResult {
        while (!self.isSet()) {
            switch (futex.wait(&self.state, unset, deadline)) {
                .woken => {},
                .timed_out => return if (self.isSet()) .set else .timed_out,
                .interrupted => return .interrupted,
            }
        }
        return .set;
    }

    /// After fork(): the state is copied as it was; nothing to reset, but no thread waits any more.
    pub fn reset(self: *Event) void {
        self.state.store(unset, .monotonic);
    }
};

const testing = std.testing;

test "wait returns once another thread sets the event" {
    const Ctx = struct {
        event: Event = .{},
        fn setter(ctx: *@This()) void {
            ctx.event.set();
        }
    };
    var ctx: Ctx = .{};
    const t = try std.Thread.spawn(.{}, Ctx.setter, .{&ctx});
    try testing.expectEqual(Event.WaitResult.set, ctx.event.wait(.fromTimeout(10 * std.time.ns_per_s)));
    t.join();
    try testing.expectEqual(Event.WaitResult.set, ctx.event.wait(.fromTimeout(0)));
}

test "a timed wait on an unset event returns after its deadline" {
    var event: Event = .{};
    const timeout_ns = 5 * std.time.ns_per_ms;
    const start_ns = clock.monotonicNs();
    try testing.expectEqual(Event.WaitResult.timed_out, event.wait(.fromTimeout(timeout_ns)));
    try testing.expect(clock.monotonicNs() - start_ns >= timeout_ns);
}

test "every waiter wakes" {
    const waiter_count = 8;
    const Ctx = struct {
        event: Event = .{},
        woken: std.atomic.Value(u32) = .init(0),
        fn waiter(ctx: *@This()) void {
            std.debug.assert(ctx.event.wait(.forever) == .set);
            _ = ctx.woken.fetchAdd(1, .monotonic);
        }
    };
    var ctx: Ctx = .{};
    var threads: [waiter_count]std.Thread = undefined;
    for (&threads) |*t| t.* = try std.Thread.spawn(.{}, Ctx.waiter, .{&ctx});
    ctx.event.set();
    for (threads) |t| t.join();
    try testing.expectEqual(@as(u32, waiter_count), ctx.woken.load(.monotonic));
}
