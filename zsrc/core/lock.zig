//! A binary semaphore: the lock behind `_thread.lock`. Any thread may release it, not only the one that
//! acquired it. One 32-bit word; the uncontended acquire is one compare-and-swap and the uncontended
//! release one swap (Drepper, "Futexes Are Tricky", mutex 2).
const std = @import("std");
const clock = @import("clock.zig");
const futex = @import("futex.zig");

pub const Lock = extern struct {
    state: std.atomic.Value(u32) = .init(unlocked),

    /// The states of `state`.
    const unlocked: u32 = 0;
    /// Held, and no thread is parked on the word: release need not wake anyone.
    const locked: u32 = 1;
    /// Held, and threads may be parked on the word: release must wake one.
    const contended: u32 = 2;

    /// How often a waiter re-reads the word before it parks: a holder that runs briefly on another core
    /// often releases within this window, and a wake-up through the kernel costs far more.
    const spin_limit = 64;
    /// Then how often it yields its CPU (re-reading the word after each) before it parks: the holder is
    /// often runnable on this very CPU (a thread just started, or the other end of a hand-off), and a
    /// yield lets it run and release at once, where parking costs a sleep and a wake-up through the
    /// kernel. CPython's PyMutex (3.13+) yields likewise, up to 40 times. A signal whose handler runs
    /// during the spins or yields (not in the futex sleep) does not end the wait: the same window as
    /// CPython's; the next signal does.
    const yield_limit = 16;

    pub const AcquireResult = enum { acquired, timed_out, interrupted };

    pub fn tryAcquire(self: *Lock) bool {
        return self.state.cmpxchgStrong(unlocked, locked, .acquire, .monotonic) == null;
    }

    /// Blocks until the lock is acquired, `deadline` passes, or a signal handler runs in this thread.
    pub fn acquire(self: *Lock, deadline: clock.Deadline) AcquireResult {
        if (self.tryAcquire()) return .acquired;
        return self.acquireSlow(deadline);
    }

    /// Like `acquire`, but a signal does not end the wait (it goes on to the same deadline): for callers
    /// that cannot run signal handlers. Whether the lock was acquired.
    pub fn acquireUninterrupted(self: *Lock, deadline: clock.Deadline) bool {
        while (true) switch (self.acquire(deadline)) {
            .acquired => return true,
            .timed_out => return false,
            .interrupted => {},
        };
    }

    fn acquireSlow(self: *Lock, deadline: clock.Deadline) AcquireResult {
        var spins: u32 = 0;
        while (spins < spin_limit) : (spins += 1) {
            if (self.state.load(.monotonic) == unlocked and self.tryAcquire()) return .acquired;
            std.atomic.spinLoopHint();
        }
        var yields: u32 = 0;
        while (yields < yield_limit) : (yields += 1) {
            std.Thread.yield() catch break;
            if (self.state.load(.monotonic) == unlocked and self.tryAcquire()) return .acquired;
            if (deadline.hasPassed()) break;
        }
        while (true) {
            // Mark the lock contended before parking, so the holder's release wakes us. If it was
            // unlocked we now hold it (possibly marked contended with nobody parked: one spare wake).
            if (self.state.swap(contended, .acquire) == unlocked) return .acquired;
            switch (futex.wait(&self.state, contended, deadline)) {
                .woken => {},
                .timed_out => return .timed_out,
                .interrupted => return .interrupted,
            }
        }
    }

    pub const ReleaseError = error{NotLocked};

    pub fn release(self: *Lock) ReleaseError!void {
        const prev = self.state.swap(unlocked, .release);
        std.debug.assert(prev <= contended);
        switch (prev) {
            unlocked => return error.NotLocked, // it stays unlocked: the swap wrote what was there
            locked => {},
            else => futex.wake(&self.state, 1),
        }
    }

    pub fn isLocked(self: *const Lock) bool {
        const s = self.state.load(.monotonic);
        std.debug.assert(s <= contended);
        return s != unlocked;
    }

    /// After fork(): the threads that held or waited on the lock do not exist in the child.
    pub fn resetAfterFork(self: *Lock) void {
        self.state.store(unlocked, .monotonic);
    }
};

const testing = std.testing;

test "uncontended acquire and release" {
    var lock: Lock = .{};
    try testing.expect(!lock.isLocked());
    try testing.expect(lock.tryAcquire());
    try testing.expect(lock.isLocked());
    try testing.expect(!lock.tryAcquire());
    try lock.release();
    try testing.expect(!lock.isLocked());
}

test "releasing an unlocked lock is an error and leaves it unlocked" {
    var lock: Lock = .{};
    try testing.expectError(error.NotLocked, lock.release());
    try testing.expect(!lock.isLocked());
    try testing.expect(lock.tryAcquire());
}

test "a timed acquire of a held lock returns after its deadline" {
    var lock: Lock = .{};
    try testing.expect(lock.tryAcquire());
    const timeout_ns = 10 * std.time.ns_per_ms;
    const start_ns = clock.monotonicNs();
    try testing.expectEqual(Lock.AcquireResult.timed_out, lock.acquire(.fromTimeout(timeout_ns)));
    try testing.expect(clock.monotonicNs() - start_ns >= timeout_ns);
    try testing.expect(lock.isLocked());
    try lock.release();
}

test "a lock acquired by one thread can be released by another" {
    const Ctx = struct {
        lock: Lock = .{},
        fn releaser(ctx: *@This()) void {
            ctx.lock.release() catch unreachable;
        }
    };
    var ctx: Ctx = .{};
    try testing.expect(ctx.lock.tryAcquire());
    const t = try std.Thread.spawn(.{}, Ctx.releaser, .{&ctx});
    try testing.expectEqual(Lock.AcquireResult.acquired, ctx.lock.acquire(.forever));
    t.join();
    try ctx.lock.release();
}

test "mutual exclusion holds and no wake-up is lost under contention" {
    const thread_count = 8;
    const iterations = 20_000;
    const Ctx = struct {
        lock: Lock = .{},
        inside: std.atomic.Value(u32) = .init(0),
        counter: u64 = 0,
        fn worker(ctx: *@This(), id: usize) void {
            for (0..iterations) |i| {
                // Mix blocking acquires with timed ones: a lost wake-up would hang the blocking ones
                // (the test runner's timeout catches it) and show up as timeouts of the timed ones.
                if ((i + id) % 3 == 0) {
                    while (ctx.lock.acquire(.fromTimeout(std.time.ns_per_ms)) != .acquired) {}
                } else {
                    std.debug.assert(ctx.lock.acquire(.forever) == .acquired);
                }
                std.debug.assert(ctx.inside.fetchAdd(1, .monotonic) == 0);
                ctx.counter += 1;
                std.debug.assert(ctx.inside.fetchSub(1, .monotonic) == 1);
                ctx.lock.release() catch unreachable;
            }
        }
    };
    var ctx: Ctx = .{};
    var threads: [thread_count]std.Thread = undefined;
    for (&threads, 0..) |*t, id| t.* = try std.Thread.spawn(.{}, Ctx.worker, .{ &ctx, id });
    for (threads) |t| t.join();
    try testing.expectEqual(@as(u64, thread_count * iterations), ctx.counter);
    try testing.expect(!ctx.lock.isLocked());
}

test "a baton passed between two threads through two locks" {
    const rounds = 10_000;
    const Ctx = struct {
        ping: Lock = .{},
        pong: Lock = .{},
        fn partner(ctx: *@This()) void {
            for (0..rounds) |_| {
                std.debug.assert(ctx.ping.acquire(.forever) == .acquired);
                ctx.pong.release() catch unreachable;
            }
        }
    };
    var ctx: Ctx = .{};
    try testing.expect(ctx.ping.tryAcquire());
    try testing.expect(ctx.pong.tryAcquire());
    const t = try std.Thread.spawn(.{}, Ctx.partner, .{&ctx});
    for (0..rounds) |_| {
        try ctx.ping.release();
        try testing.expectEqual(Lock.AcquireResult.acquired, ctx.pong.acquire(.fromTimeout(10 * std.time.ns_per_s)));
    }
    t.join();
}
