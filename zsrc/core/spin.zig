//! The pacing of a spin: a thread that waits for another by re-reading a word, because the other is expected
//! to be done within microseconds and a sleep and a wake-up through the kernel cost more. What it reads and
//! when it is done is the caller's (`Lock.spinAcquire`; a joiner, `handover.spinUntil`);
//! how long it spins, how often it reads the clock, and when it gives its CPU away between reads, is here, once.
const std = @import("std");
const builtin = @import("builtin");
const clock = @import("clock.zig");

pub const Pacer = struct {
    /// The spin ends once the monotonic clock reaches this (ns).
    until_ns: u64,
    /// From its first clock read at or after this moment the spinner yields its CPU between reads
    /// (`std.Thread.yield`: `sched_yield`, Windows' `NtYieldExecution`) instead of a spin hint. With more
    /// runnable threads than CPUs, the thread it waits for may be queued behind it on its CPU, and a spin hint
    /// keeps it there until the scheduler's next tick. maxInt: never.
    yield_from_ns: u64 = std.math.maxInt(u64),
    /// The latest moment `extendTo` may move `until_ns` to (the caller's deadline). maxInt: none.
    limit_ns: u64 = std.math.maxInt(u64),
    /// Reads so far (pauses taken): 0 before the first pause.
    reads: u32 = 0,
    yielding: bool = false,

    /// Call after each read that did not end the spin: false once the clock has reached `until_ns` (the
    /// spinner gives up), else it pauses and returns true (read again). The clock is read every 16 reads (a
    /// read of it costs about as much as 16 spin hints), or at every read once yielding (a yield is a system
    /// call).
    pub fn pause(self: *Pacer) bool {
        defer self.reads +%= 1;
        if (self.yielding or self.reads % 16 == 15) {
            const now = clock.monotonicNs();
            if (now >= self.until_ns) return false;
            self.yielding = now >= self.yield_from_ns;
        }
        if (self.yielding) {
            if (builtin.is_test) _ = yields_in_tests.fetchAdd(1, .monotonic);
            std.Thread.yield() catch std.atomic.spinLoopHint();
        } else std.atomic.spinLoopHint();
        return true;
    }

    /// Moves the end of the spin to `ns` if that is later, but never past `limit_ns`.
    pub fn extendTo(self: *Pacer, ns: u64) void {
        self.until_ns = @max(self.until_ns, @min(ns, self.limit_ns));
    }

    /// Test builds count the yields (a test checks that a spinner yields when asked, and only then); other
    /// builds have no counter.
    pub var yields_in_tests: if (builtin.is_test) std.atomic.Value(u32) else void = if (builtin.is_test) .init(0) else {};
};

const testing = std.testing;

test "a pacer gives up once its clock limit is reached, not before, and yields only from its mark on" {
    const before = Pacer.yields_in_tests.load(.monotonic);
    const until = clock.monotonicNs() + std.time.ns_per_ms;
    var p: Pacer = .{ .until_ns = until };
    while (p.pause()) {}
    try testing.expect(clock.monotonicNs() >= until);
    try testing.expect(p.reads >= 16);
    try testing.expectEqual(before, Pacer.yields_in_tests.load(.monotonic));
    // A limit already past: it gives up at its first clock read (the 16th pause), not sooner.
    var past: Pacer = .{ .until_ns = 0 };
    var pauses: u32 = 0;
    while (past.pause()) pauses += 1;
    try testing.expectEqual(@as(u32, 15), pauses);
    // Yielding from the start: it yields from its first clock read on and still ends at its limit.
    // 20 ms: a spinner descheduled past its limit before its first clock read would give up unyielded.
    const until_y = clock.monotonicNs() + 20 * std.time.ns_per_ms;
    var y: Pacer = .{ .until_ns = until_y, .yield_from_ns = 0 };
    while (y.pause()) {}
    try testing.expect(clock.monotonicNs() >= until_y);
    try testing.expect(Pacer.yields_in_tests.load(.monotonic) > before);
}

test "a pacer's end moves later only, and never past its limit" {
    var p: Pacer = .{ .until_ns = 1000, .limit_ns = 5000 };
    p.extendTo(500);
    try testing.expectEqual(@as(u64, 1000), p.until_ns);
    p.extendTo(3000);
    try testing.expectEqual(@as(u64, 3000), p.until_ns);
    p.extendTo(std.math.maxInt(u64));
    try testing.expectEqual(@as(u64, 5000), p.until_ns);
    var unlimited: Pacer = .{ .until_ns = 1000 };
    unlimited.extendTo(9000);
    try testing.expectEqual(@as(u64, 9000), unlimited.until_ns);
}
