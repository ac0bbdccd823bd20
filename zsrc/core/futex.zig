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
    /// Woken, or a spurious wake (or, where the OS does not say so, the word no longer held the expected
    /// value): the caller re-checks. The thread may have taken a wake-up meant for another.
    woken,
    /// The word no longer held the expected value when the thread tried to sleep (Linux's EAGAIN): it never
    /// slept, so it took no wake-up. The caller re-checks.
    changed,
    /// The deadline passed.
    timed_out,
    /// A signal handler ran in this thread (POSIX EINTR): the caller should run Python's handlers.
    interrupted,
};

/// Blocks while `word` holds `expect`, until woken, `deadline` passes, or a signal arrives (on Windows: a
/// console Ctrl-C or Ctrl-Break, if this thread's waits are `console.interruptible`).
pub fn wait(word: *const Atomic, expect: u32, deadline: clock.Deadline) WaitResult {
    return Impl.wait(word, expect, deadline);
}

/// `wait` for a deadline that is a hint, not a promise (the lock's fairness timer): on Linux the thread keeps
/// its timer slack (no prctl calls), so the kernel may end the sleep up to that slack late.
pub fn waitLoosely(word: *const Atomic, expect: u32, deadline: clock.Deadline) WaitResult {
    return if (os == .linux) LinuxImpl.waitSlack(word, expect, deadline, false) else Impl.wait(word, expect, deadline);
}

/// Windows has no signals: Ctrl-C reaches a process as a console control event, handled on a thread of its
/// own, and a thread blocked in WaitOnAddress never hears of it (CPython 3.10-3.13: gh-74157). zthread's
/// console handler (`install`) runs a hook first (the CPython layer's: it makes Python see SIGINT), then
/// wakes the one thread whose waits are interruptible (the CPython layer marks the main thread's: Python
/// runs signal handlers there only), whose wait returns `.interrupted`, as EINTR makes it on POSIX. The
/// handler returns FALSE, so the handlers registered before it (CPython's own) run too. Elsewhere this is
/// inert: POSIX signals interrupt waits by themselves.
pub const console = struct {
    /// Set by a thread for its own waits: true where Ctrl-C must end them.
    pub threadlocal var interruptible: bool = false;
    /// Set by every console event, taken by the interruptible thread's next wait (which then returns
    /// `.interrupted` at once): an event that comes while that thread is not waiting still ends its next
    /// wait, so the CPython layer runs Python's handlers (at worst for nothing: they already ran).
    var pending = std.atomic.Value(bool).init(false);
    /// The word the interruptible thread waits on now (null when it is not waiting).
    var waiting_on = std.atomic.Value(?*const Atomic).init(null);
    var hook: ?*const fn (event: u32) void = null;

    pub const ctrl_c_event: u32 = 0;
    pub const ctrl_break_event: u32 = 1;

    /// Registers the console handler (once per process), with `on_event` to run first in it. False if the OS
    /// refused; true without doing anything where there are no console events.
    pub fn install(on_event: *const fn (event: u32) void) bool {
        if (os != .windows) return true;
        hook = on_event;
        return WindowsImpl.SetConsoleCtrlHandler(&WindowsImpl.consoleHandler, .TRUE).toBool();
    }

    /// What the handler does for a Ctrl-C (`ctrl_c_event`) or Ctrl-Break: runs the hook, then ends the
    /// interruptible thread's wait. Public for the tests, which cannot press keys.
    pub fn interrupt(event: u32) void {
        if (hook) |h| h(event);
        pending.store(true, .seq_cst);
        if (waiting_on.load(.seq_cst)) |word| wake(word, std.math.maxInt(u32));
    }
};

/// Wakes at most `max_waiters` threads blocked in `wait` on `word`.
pub fn wake(word: *const Atomic, max_waiters: u32) void {
    std.debug.assert(max_waiters > 0);
    Impl.wake(word, max_waiters);
}

const Impl = if (os == .linux)
    LinuxImpl
else if (os.isDarwin())
    DarwinImpl
else if (os == .windows)
    WindowsImpl
else if (os == .freebsd)
    FreeBsdImpl
else
    @compileError("zthread: no wait-on-address primitive for this OS");

const LinuxImpl = struct {
    const linux = std.os.linux;

    // https://man7.org/linux/man-pages/man2/futex.2.html
    // FUTEX_WAIT_BITSET takes an ABSOLUTE timeout measured against CLOCK_MONOTONIC (unless
    // FUTEX_CLOCK_REALTIME is set), which is exactly the deadline we carry: no recomputation on retry.
    /// A timed wait that ends by a wake-up (the common end: a release, a notify) must not pay for timer
    /// precision: it first sleeps until one timer slack before the deadline with the thread's own slack
    /// (no prctl), so the kernel ends that sleep by the deadline at the latest; only if the timer ends it
    /// does the thread sleep the rest (at most the slack) with 1 ns of slack, the prctl pair around it.
    fn wait(word: *const Atomic, expect: u32, deadline: clock.Deadline) WaitResult {
        if (deadline.isForever()) return waitSlack(word, expect, deadline, false);
        const slack = threadSlack();
        if (slack > 1 and deadline.ns > slack) {
            const early: clock.Deadline = .{ .ns = deadline.ns - slack };
            if (!early.hasPassed()) {
                const result = waitSlack(word, expect, early, false);
                if (result != .timed_out) return result;
            }
        }
        return waitSlack(word, expect, deadline, slack > 1);
    }

    /// The calling thread's timer slack, asked once per thread (and again whenever a precise sleep asks
    /// it anyway); 1 where it cannot be asked (nothing to narrow then).
    threadlocal var thread_slack_ns: usize = 0;

    fn threadSlack() usize {
        if (thread_slack_ns == 0) {
            const slack = linux.prctl(@backingInt(linux.PR.GET_TIMERSLACK), 0, 0, 0, 0);
            thread_slack_ns = if (linux.errno(slack) != .SUCCESS or slack == 0) 1 else slack;
        }
        return thread_slack_ns;
    }

    fn waitSlack(word: *const Atomic, expect: u32, deadline: clock.Deadline, precise: bool) WaitResult {
        var ts: linux.timespec = undefined;
        var ts_ptr: ?*const linux.timespec = null;
        var slack_to_restore: ?usize = null;
        if (!deadline.isForever()) {
            ts = .{
                .sec = @intCast(deadline.ns / clock.ns_per_s),
                .nsec = @intCast(deadline.ns % clock.ns_per_s),
            };
            ts_ptr = &ts;
            if (precise) slack_to_restore = narrowTimerSlack();
        }
        defer if (slack_to_restore) |slack| setTimerSlack(slack);
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
            .AGAIN => .changed, // the word no longer held `expect`: never queued, so no wake-up taken
            .INTR => .interrupted, // a signal handler ran: let the caller run Python's handlers
            .TIMEDOUT => .timed_out, // the absolute deadline passed
            // EINVAL (bad timespec or op) and EFAULT (bad address) are bugs in this file.
            else => |e| std.debug.panic("futex wait: unexpected errno {t}", .{e}),
        };
    }

    // https://man7.org/linux/man-pages/man2/pr_set_timerslack.2const.html
    // The kernel may end a timed sleep up to the thread's timer slack after its deadline (50 us by default)
    // to coalesce wake-ups. A timeout promises when the caller resumes, so a timed wait runs with a slack
    // of 1 ns and gives the thread its own slack back afterwards (two prctl calls, only when it sleeps).
    // Returns the slack to restore, or null if there is nothing to do (already 1 ns, or no prctl).
    fn narrowTimerSlack() ?usize {
        const slack = linux.prctl(@backingInt(linux.PR.GET_TIMERSLACK), 0, 0, 0, 0);
        if (linux.errno(slack) != .SUCCESS or slack <= 1) return null;
        thread_slack_ns = slack;
        setTimerSlack(1);
        return slack;
    }

    fn setTimerSlack(ns: usize) void {
        _ = linux.prctl(@backingInt(linux.PR.SET_TIMERSLACK), ns, 0, 0, 0);
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

const DarwinImpl = struct {
    const c = std.c;
    /// __ulock_wait2 (nanoseconds, 64-bit) exists from macOS 11; older targets get __ulock_wait.
    const has_wait2 = builtin.os.isAtLeast(.macos, .{ .major = 11, .minor = 0, .patch = 0 }) orelse false;

    // https://github.com/apple/darwin-xnu/blob/main/bsd/sys/ulock.h (private but stable; macOS 11+ has
    // __ulock_wait2, whose timeout is RELATIVE nanoseconds, 0 meaning none): recompute it per call.
    fn wait(word: *const Atomic, expect: u32, deadline: clock.Deadline) WaitResult {
        var timeout_ns: u64 = 0;
        if (!deadline.isForever()) {
            timeout_ns = deadline.remainingNs();
            if (timeout_ns == 0) return .timed_out;
        }
        const op: c.UL = .{ .op = .COMPARE_AND_WAIT, .NO_ERRNO = true };
        const rc = if (has_wait2)
            c.__ulock_wait2(op, &word.raw, expect, timeout_ns, 0)
        else
            // macOS 10.12-10.15: microseconds in a u32 (~71 minutes). A longer wait returns as timed out
            // early here, so report it as a wake instead and let the caller wait again.
            c.__ulock_wait(op, &word.raw, expect, std.math.lossyCast(u32, std.math.divCeil(u64, timeout_ns, 1000) catch unreachable));
        if (rc >= 0) return .woken; // woken, or the word no longer held `expect`
        return switch (@as(c.E, @fromBackingInt(@intCast(-rc)))) {
            .INTR => .interrupted, // a signal handler ran: let the caller run Python's handlers
            .TIMEDOUT => if (deadline.hasPassed()) .timed_out else .woken, // see the u32 cap above
            .FAULT => .woken, // the page was out; the caller re-checks and waits again
            else => |e| std.debug.panic("__ulock_wait: unexpected errno {t}", .{e}),
        };
    }

    fn wake(word: *const Atomic, max_waiters: u32) void {
        const op: c.UL = .{ .op = .COMPARE_AND_WAIT, .NO_ERRNO = true, .WAKE_ALL = max_waiters > 1 };
        while (true) {
            const rc = c.__ulock_wake(op, &word.raw, 0);
            if (rc >= 0) return;
            switch (@as(c.E, @fromBackingInt(@intCast(-rc)))) {
                .INTR => continue, // retry: the wake must happen
                .NOENT => return, // nobody was waiting
                else => |e| std.debug.panic("__ulock_wake: unexpected errno {t}", .{e}),
            }
        }
    }
};

const WindowsImpl = struct {
    const windows = std.os.windows;
    const ntdll = windows.ntdll;

    // https://learn.microsoft.com/en-us/windows/win32/api/synchapi/nf-synchapi-waitonaddress (the ntdll
    // function behind it). The timeout is RELATIVE, in 100 ns units, given as a negative number.
    fn wait(word: *const Atomic, expect: u32, deadline: clock.Deadline) WaitResult {
        if (!console.interruptible) return waitOnAddress(word, expect, deadline.remainingNsOrNull());
        // Ctrl-C ends this wait (see `console`). The handler sets `pending`, then wakes `waiting_on`: publish
        // the word first, then take `pending`. An event whose wake-up comes before this thread blocks is
        // lost; waiting in slices of 100 ms bounds how late its `pending` is seen.
        console.waiting_on.store(word, .seq_cst);
        defer console.waiting_on.store(null, .seq_cst);
        if (console.pending.swap(false, .seq_cst)) return .interrupted;
        const slice_ns = 100 * std.time.ns_per_ms;
        const remaining = deadline.remainingNsOrNull();
        const result = waitOnAddress(word, expect, if (remaining) |r| @min(r, slice_ns) else slice_ns);
        if (console.pending.swap(false, .seq_cst)) return .interrupted;
        if (result == .timed_out and !deadline.hasPassed()) return .woken; // a slice ended: the caller waits again
        return result;
    }

    fn waitOnAddress(word: *const Atomic, expect: u32, timeout_ns: ?u64) WaitResult {
        var timeout: windows.LARGE_INTEGER = undefined;
        var timeout_ptr: ?*const windows.LARGE_INTEGER = null;
        if (timeout_ns) |ns| {
            if (ns == 0) return .timed_out;
            timeout = -@as(i64, @intCast(std.math.divCeil(u64, ns, 100) catch unreachable));
            timeout_ptr = &timeout;
        }
        const status = ntdll.RtlWaitOnAddress(&word.raw, &expect, @sizeOf(u32), timeout_ptr);
        return switch (status) {
            .SUCCESS => .woken, // woken, spuriously or not, or the word no longer held `expect`
            .TIMEOUT => .timed_out,
            else => std.debug.panic("RtlWaitOnAddress: unexpected status 0x{x}", .{@backingInt(status)}),
        };
    }

    extern "kernel32" fn SetConsoleCtrlHandler(handler: ?*const fn (u32) callconv(.winapi) windows.BOOL, add: windows.BOOL) callconv(.winapi) windows.BOOL;

    fn consoleHandler(event: u32) callconv(.winapi) windows.BOOL {
        if (event == console.ctrl_c_event or event == console.ctrl_break_event) console.interrupt(event);
        return .FALSE; // the next handler (CPython's own) runs as well
    }

    fn wake(word: *const Atomic, max_waiters: u32) void {
        if (max_waiters > 1) ntdll.RtlWakeAddressAll(&word.raw) else ntdll.RtlWakeAddressSingle(&word.raw);
    }
};

const FreeBsdImpl = struct {
    const c = std.c;

    // https://man.freebsd.org/cgi/man.cgi?query=_umtx_op: UMTX_OP_WAIT_UINT_PRIVATE takes an absolute
    // CLOCK_MONOTONIC deadline with UMTX_ABSTIME, like Linux's FUTEX_WAIT_BITSET.
    fn wait(word: *const Atomic, expect: u32, deadline: clock.Deadline) WaitResult {
        var tm: c._umtx_time = undefined;
        var tm_size: usize = 0;
        var tm_ptr: usize = 0;
        if (!deadline.isForever()) {
            tm = .{
                .timeout = .{ .sec = @intCast(deadline.ns / clock.ns_per_s), .nsec = @intCast(deadline.ns % clock.ns_per_s) },
                .flags = c.UMTX_ABSTIME,
                .clockid = .MONOTONIC,
            };
            tm_size = @sizeOf(c._umtx_time);
            tm_ptr = @intFromPtr(&tm);
        }
        const rc = c._umtx_op(@intFromPtr(&word.raw), @backingInt(c.UMTX_OP.WAIT_UINT_PRIVATE), expect, tm_size, tm_ptr);
        return switch (std.posix.errno(rc)) {
            .SUCCESS => .woken, // woken, or the word no longer held `expect`
            .INTR => .interrupted, // a signal handler ran: let the caller run Python's handlers
            .TIMEDOUT => .timed_out,
            else => |e| std.debug.panic("_umtx_op wait: unexpected errno {t}", .{e}),
        };
    }

    fn wake(word: *const Atomic, max_waiters: u32) void {
        const n: c_ulong = @min(max_waiters, std.math.maxInt(i32));
        const rc = c._umtx_op(@intFromPtr(&word.raw), @backingInt(c.UMTX_OP.WAKE_PRIVATE), n, 0, 0);
        switch (std.posix.errno(rc)) {
            .SUCCESS => {},
            else => |e| std.debug.panic("_umtx_op wake: unexpected errno {t}", .{e}),
        }
    }
};

test "wait returns at once when the word does not hold the expected value" {
    var word = Atomic.init(1);
    // Linux says the thread never slept; the other systems return as from a wake-up.
    try std.testing.expectEqual(if (os == .linux) WaitResult.changed else .woken, wait(&word, 0, .forever));
    try std.testing.expectEqual(if (os == .linux) WaitResult.changed else .woken, waitLoosely(&word, 0, .forever));
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

test "a timed wait leaves the thread's timer slack as it found it" {
    if (os != .linux) return error.SkipZigTest;
    const linux = std.os.linux;
    // Not every environment lets a thread set its slack (qemu-user may not pass prctl through).
    const set = linux.prctl(@backingInt(linux.PR.SET_TIMERSLACK), 123_000, 0, 0, 0);
    if (linux.errno(set) != .SUCCESS) return error.SkipZigTest;
    var word = Atomic.init(0);
    try std.testing.expectEqual(WaitResult.timed_out, wait(&word, 0, clock.Deadline.fromTimeout(std.time.ns_per_ms)));
    try std.testing.expectEqual(@as(usize, 123_000), linux.prctl(@backingInt(linux.PR.GET_TIMERSLACK), 0, 0, 0, 0));
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

/// Sleeps by waiting on a word nobody changes (this file has no other clock-driven sleep).
fn sleepNs(ns: u64) void {
    var word = Atomic.init(0);
    const deadline = clock.Deadline.fromTimeout(ns);
    while (wait(&word, 0, deadline) != .timed_out) {}
}

const ConsoleTest = struct {
    word: Atomic = .init(0),
    result: WaitResult = .woken,
    var hooked = std.atomic.Value(u32).init(0);

    fn onEvent(event: u32) void {
        std.debug.assert(event == console.ctrl_c_event);
        _ = hooked.fetchAdd(1, .seq_cst);
    }

    fn interruptibleWaiter(ctx: *ConsoleTest) void {
        console.interruptible = true;
        while (true) { // past spurious wake-ups and the ends of slices
            ctx.result = wait(&ctx.word, 0, .forever);
            if (ctx.result == .interrupted or ctx.result == .timed_out) return;
        }
    }

    fn timedWaiter(ctx: *ConsoleTest) void {
        const deadline = clock.Deadline.fromTimeout(100 * std.time.ns_per_ms);
        while (true) {
            ctx.result = wait(&ctx.word, 0, deadline);
            if (ctx.result == .interrupted or ctx.result == .timed_out) return;
        }
    }
};

test "a console Ctrl-C runs the hook, then ends the interruptible thread's wait" {
    if (os != .windows) return error.SkipZigTest;
    try std.testing.expect(console.install(ConsoleTest.onEvent));
    console.pending.store(false, .seq_cst);
    const before = ConsoleTest.hooked.load(.seq_cst);
    var ctx: ConsoleTest = .{};
    const t = try std.Thread.spawn(.{}, ConsoleTest.interruptibleWaiter, .{&ctx});
    sleepNs(50 * std.time.ns_per_ms); // let it block (if it has not yet, it sees `pending` later)
    console.interrupt(console.ctrl_c_event);
    t.join();
    try std.testing.expectEqual(WaitResult.interrupted, ctx.result);
    try std.testing.expectEqual(before + 1, ConsoleTest.hooked.load(.seq_cst));
}

test "a Ctrl-C while the interruptible thread was not waiting ends its next wait at once" {
    if (os != .windows) return error.SkipZigTest;
    try std.testing.expect(console.install(ConsoleTest.onEvent));
    console.pending.store(false, .seq_cst);
    console.interrupt(console.ctrl_c_event);
    var ctx: ConsoleTest = .{};
    const t = try std.Thread.spawn(.{}, ConsoleTest.interruptibleWaiter, .{&ctx});
    t.join();
    try std.testing.expectEqual(WaitResult.interrupted, ctx.result);
}

test "a Ctrl-C does not end the waits of other threads" {
    if (os != .windows) return error.SkipZigTest;
    try std.testing.expect(console.install(ConsoleTest.onEvent));
    var ctx: ConsoleTest = .{};
    const t = try std.Thread.spawn(.{}, ConsoleTest.timedWaiter, .{&ctx});
    sleepNs(20 * std.time.ns_per_ms);
    console.interrupt(console.ctrl_c_event);
    t.join();
    try std.testing.expectEqual(WaitResult.timed_out, ctx.result);
    console.pending.store(false, .seq_cst);
}
