//! A recursive lock: the lock behind `_thread.RLock`. The owner is a thread ident chosen by the caller
//! (the CPython layer passes `get_ident()`), so the core stays free of Python. Only the owner writes
//! `count`; `owner` and `count` are atomic (relaxed: the lock itself orders the owner's accesses) because other
//! threads read them, with no GIL between them on a free-threaded CPython, to learn that they are not the
//! owner, or for a repr.
const std = @import("std");
const clock = @import("clock.zig");
const Lock = @import("lock.zig").Lock;

pub const RecursiveLock = extern struct {
    lock: Lock = .{},
    /// The ident of the thread holding the lock, 0 when nobody does.
    owner: std.atomic.Value(u64) = .init(0),
    /// How many times the owner has acquired it; 0 when unowned.
    count: std.atomic.Value(u64) = .init(0),

    pub fn isOwnedBy(self: *const RecursiveLock, ident: u64) bool {
        return self.recursionCount(ident) > 0;
    }

    pub const CountError = error{CountOverflow};

    /// If `ident` holds the lock, counts one more acquisition and returns true; else returns false and
    /// the caller acquires `lock` (blocking as it pleases) and then calls `setOwner`.
    pub fn reenter(self: *RecursiveLock, ident: u64) CountError!bool {
        std.debug.assert(ident != 0);
        const count = self.recursionCount(ident);
        if (count == 0) return false;
        self.count.store(std.math.add(u64, count, 1) catch return error.CountOverflow, .monotonic);
        return true;
    }

    /// Records the new owner once `lock` has been acquired (CPython's `_acquire_restore` sets any owner).
    pub fn setOwner(self: *RecursiveLock, ident: u64, count: u64) void {
        std.debug.assert(self.lock.isLocked());
        self.owner.store(ident, .monotonic);
        self.count.store(count, .monotonic);
    }

    /// How many times `ident` holds the lock: 0 for any other thread. The count is read once; only the owner
    /// writes it, so for the owner it is exact, and for another thread `owner` differs.
    pub fn recursionCount(self: *const RecursiveLock, ident: u64) u64 {
        const count = self.count.load(.monotonic);
        return if (self.owner.load(.monotonic) == ident) count else 0;
    }

    /// Blocking acquire for callers with no GIL to release (the core's own tests).
    pub fn acquire(self: *RecursiveLock, ident: u64, deadline: clock.Deadline) Lock.AcquireResult {
        if (self.reenter(ident) catch unreachable) return .acquired;
        const result = self.lock.acquire(deadline);
        if (result == .acquired) self.setOwner(ident, 1);
        return result;
    }

    pub const ReleaseError = error{NotOwned};

    pub fn release(self: *RecursiveLock, ident: u64) ReleaseError!void {
        const count = self.recursionCount(ident);
        if (count == 0) return error.NotOwned;
        if (count > 1) return self.count.store(count - 1, .monotonic);
        self.releaseFully();
    }

    fn releaseFully(self: *RecursiveLock) void {
        self.count.store(0, .monotonic);
        self.owner.store(0, .monotonic);
        self.lock.release() catch unreachable; // the owner held it
    }

    pub const Saved = struct { count: u64, owner: u64 };

    /// `_release_save()`: gives the lock up entirely, returning what `restore` needs (Condition.wait).
    pub fn releaseSave(self: *RecursiveLock) ReleaseError!Saved {
        const count = self.count.load(.monotonic);
        if (count == 0) return error.NotOwned;
        const saved: Saved = .{ .count = count, .owner = self.owner.load(.monotonic) };
        self.releaseFully();
        return saved;
    }

    pub fn isLocked(self: *const RecursiveLock) bool {
        return self.lock.isLocked();
    }

    /// After fork(): the owner, if any, was a thread that does not exist in the child.
    pub fn resetAfterFork(self: *RecursiveLock) void {
        self.lock.resetAfterFork();
        self.owner.store(0, .monotonic);
        self.count.store(0, .monotonic);
    }

    /// The count, for a repr: any thread may read it (0 when unowned).
    pub fn countNow(self: *const RecursiveLock) u64 {
        return self.count.load(.monotonic);
    }
};

const testing = std.testing;

test "the owner re-enters and must release as often as it acquired" {
    var r: RecursiveLock = .{};
    try testing.expectEqual(Lock.AcquireResult.acquired, r.acquire(7, .forever));
    try testing.expect(try r.reenter(7));
    try testing.expect(r.isOwnedBy(7));
    try testing.expectEqual(@as(u64, 2), r.recursionCount(7));
    try testing.expectEqual(@as(u64, 0), r.recursionCount(8));
    try testing.expectEqual(@as(u64, 2), r.countNow());
    try r.release(7);
    try testing.expect(r.isLocked());
    try r.release(7);
    try testing.expect(!r.isLocked());
    try testing.expectError(error.NotOwned, r.release(7));
}

test "another thread can neither release nor enter" {
    var r: RecursiveLock = .{};
    try testing.expectEqual(Lock.AcquireResult.acquired, r.acquire(1, .forever));
    try testing.expectError(error.NotOwned, r.release(2));
    try testing.expect(!try r.reenter(2));
    try testing.expectEqual(Lock.AcquireResult.timed_out, r.acquire(2, .fromTimeout(std.time.ns_per_ms)));
    try r.release(1);
}

test "release_save and acquire_restore round-trip the state" {
    var r: RecursiveLock = .{};
    _ = r.acquire(3, .forever);
    _ = r.acquire(3, .forever);
    const saved = try r.releaseSave();
    try testing.expect(!r.isLocked());
    try testing.expectEqual(RecursiveLock.Saved{ .count = 2, .owner = 3 }, saved);
    try testing.expect(r.lock.tryAcquire());
    r.setOwner(saved.owner, saved.count);
    try testing.expect(r.isOwnedBy(3));
    try testing.expectEqual(@as(u64, 2), r.countNow());
    var unowned: RecursiveLock = .{};
    try testing.expectError(error.NotOwned, unowned.releaseSave());
}

test "the count refuses to overflow" {
    var r: RecursiveLock = .{};
    _ = r.acquire(9, .forever);
    r.count.store(std.math.maxInt(u64), .monotonic);
    try testing.expectError(error.CountOverflow, r.reenter(9));
    try testing.expectEqual(@as(u64, std.math.maxInt(u64)), r.countNow());
}

test "recursive locks exclude each other's threads under contention" {
    const thread_count = 6;
    const iterations = 5_000;
    const Ctx = struct {
        r: RecursiveLock = .{},
        counter: u64 = 0,
        fn worker(ctx: *@This(), ident: u64) void {
            for (0..iterations) |_| {
                std.debug.assert(ctx.r.acquire(ident, .forever) == .acquired);
                std.debug.assert(ctx.r.acquire(ident, .forever) == .acquired);
                ctx.counter += 1;
                ctx.r.release(ident) catch unreachable;
                ctx.r.release(ident) catch unreachable;
            }
        }
    };
    var ctx: Ctx = .{};
    var threads: [thread_count]std.Thread = undefined;
    for (&threads, 1..) |*t, ident| t.* = try std.Thread.spawn(.{}, Ctx.worker, .{ &ctx, ident });
    for (threads) |t| t.join();
    try testing.expectEqual(@as(u64, thread_count * iterations), ctx.counter);
}
