//! A one-shot event: set once, waited for by any number of threads (a thread's "done" signal).
const std = @import("std");
const clock = @import("clock.zig");
const futex = @import("futex.zig");

pub const Event = extern struct {
    state: std.atomic.Value(u32) = .init(unset),

    const unset: u32 = 0;
    const is_set: u32 = 1;
    /// Unset, and a thread may be asleep on it: only then does `set` make a system call to wake.
    const waited_for: u32 = 2;

    pub const WaitResult = enum { set, timed_out, interrupted };

    pub fn isSet(self: *const Event) bool {
        return self.state.load(.acquire) == is_set;
    }

    /// Sets the event and wakes every waiter. Needs no GIL: a thread calls it after its thread state is gone.
    /// No wake-up when nobody waits (a thread's "published" and "done" events mostly): a waiter marks the
    /// word `waited_for` before it sleeps, and sleeps only while the word still says so, so the swap here
    /// either sees the mark and wakes, or comes first and the waiter's sleep returns at once.
    pub fn set(self: *Event) void {
        if (self.state.swap(is_set, .release) == waited_for) futex.wake(&self.state, std.math.maxInt(u32));
    }

    pub fn wait(self: *Event, deadline: clock.Deadline) WaitResult {
        while (true) {
            const s = self.state.load(.acquire);
            if (s == is_set) return .set;
            if (s == unset) {
                _ = self.state.cmpxchgWeak(unset, waited_for, .acquire, .acquire);
                continue; // re-read: set, marked (by this thread or another), or a spurious failure
            }
            switch (futex.wait(&self.state, waited_for, deadline)) {
                .woken, .changed => {},
                .timed_out => return if (self.isSet()) .set else .timed_out,
                .interrupted => return .interrupted,
            }
        }
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

test "a set racing a wait is never lost" {
    // The setter swaps in `is_set` while the waiter marks the word or goes to sleep: a lost wake-up hangs
    // the wait (the test runner's timeout catches it).
    const Ctx = struct {
        event: Event = .{},
        fn setter(ctx: *@This()) void {
            ctx.event.set();
        }
    };
    for (0..2000) |_| {
        var ctx: Ctx = .{};
        const t = try std.Thread.spawn(.{}, Ctx.setter, .{&ctx});
        try testing.expectEqual(Event.WaitResult.set, ctx.event.wait(.fromTimeout(10 * std.time.ns_per_s)));
        t.join();
    }
}
