//! Wait-on-address: block while a 32-bit word holds an expected value, and wake blocked waiters.
//!
//! One small interface, one implementation per OS chosen at comptime (the shape of Zig 0.15's
//! `std/Thread/Futex.zig`). Unlike `std.Io`'s futex, a wait here returns `.interrupted` when a signal
//! handler ran, so the CPython layer can run Python's signal handlers (Ctrl-C) and decide whether to retry.
const std = @import("std");
const builtin = @import("builtin");
const clock = @import("clock.zig");

const os = builtin.os.tag;
const Atomic = std.atomic.Value(u32);

pub const WaitResult = enum {
    /// Woken, or the word no longer held the expected value, or a spurious wake: the caller re-checks.
    woken,
    /// The deadline passed.
    timed_out,
    /// A signal handler ran in this thread (POSIX EINTR): the caller should run Python's handlers.
    interrupted,
};

/// Blocks while `word` holds `expect`, until woken, `deadline` passes, or a signal arrives.
pub fn wait(word: *const Atomic, expect: u32, deadline: clock.Deadline) WaitResult {
    return Impl.wait(word, expect, deadline);
}

/// Wakes at most `max_waiters` threads blocked in `wait` on `word`.
pub fn wake(word: *const Atomic, max_waiters: u32) void {
    std.debug.assert(max_waiters > 0);
    Impl.wake(word, max_waiters);
}

const Impl = if (os == .linux)
    LinuxImpl
else
    @compileError("zthread: no wait-on-address primitive for this OS yet (macOS __ulock, Windows WaitOnAddress and FreeBSD _umtx_op are planned)");

const LinuxImpl = struct {
    const linux = std.os.linux;

    // https://man7.org/linux/man-pages/man2/futex.2.html
    // FUTEX_WAIT_BITSET takes an ABSOLUTE timeout measured against CLOCK_MONOTONIC (unless
    // FUTEX_CLOCK_REALTIME is set), which is exactly the deadline we carry: no recomputation on retry.
    fn wait(word: *const Atomic, expect: u32, deadline: clock.Deadline) WaitResult {
        var ts: linux.timespec = undefined;
        var ts_ptr: ?*const linux.timespec = null;
        if (!deadline.isForever()) {
            ts = .{
                .sec = @intCast(deadline.ns / clock.ns_per_s),
                .nsec = @intCast(deadline.ns % clock.ns_per_s),
            };
            ts_ptr = &ts;
        }
        const rc = linux.futex(
            &word.raw,
            .{ .cmd = .WAIT_BITSET, .private = true },
            expect,
            .{ .timeout = ts_ptr },
            null,
            0xffff_ffff, // FUTEX_BITSET_MATCH_ANY
        );
        return switch (linux.errno(rc)) {
            .SUCCESS => .woken, // woken by FUTEX_WAKE (or spuriously): re-check the word
            .AGAIN => .woken, // the word no longer held `expect` when we tried to sleep
            .INTR => .interrupted, // a signal handler ran: let the caller run Python's handlers
            .TIMEDOUT => .timed_out, // the absolute deadline passed
            // EINVAL (bad timespec or op) and EFAULT (bad address) are bugs in this file.
            else => |e| std.debug.panic("futex wait: unexpected errno {t}", .{e}),
        };
    }

    fn wake(word: *const Atomic, max_waiters: u32) void {
        const n: u32 = @min(max_waiters, std.math.maxInt(i32));
        const rc = linux.futex_3arg(&word.raw, .{ .cmd = .WAKE, .private = true }, n);
        switch (linux.errno(rc)) {
            .SUCCESS => {}, // rc = number of waiters woken, possibly 0
            .FAULT => {}, // the word was unmapped after its last use: nobody can be waiting on it
            else => |e| std.debug.panic("futex wake: unexpected errno {t}", .{e}),
        }
    }
};

test "wait returns at once when the word does not hold the expected value" {
    var word = Atomic.init(1);
    try std.testing.expectEqual(WaitResult.woken, wait(&word, 0, .forever));
}

test "a timed wait returns after its deadline, not before" {
    var word = Atomic.init(0);
    const timeout_ns = 20 * std.time.ns_per_ms;
    const start_ns = clock.monotonicNs();
    const deadline = clock.Deadline.fromTimeout(timeout_ns);
    while (true) {
        if (wait(&word, 0, deadline) == .timed_out) break;
    }
    try std.testing.expect(clock.monotonicNs() - start_ns >= timeout_ns);
}

test "wake releases a waiter" {
    const Ctx = struct {
        word: Atomic = .init(0),
        fn waiter(ctx: *@This()) void {
            while (ctx.word.load(.acquire) == 0) _ = wait(&ctx.word, 0, .forever);
        }
    };
    var ctx: Ctx = .{};
    const t = try std.Thread.spawn(.{}, Ctx.waiter, .{&ctx});
    ctx.word.store(1, .release);
    wake(&ctx.word, 1);
    t.join();
}
