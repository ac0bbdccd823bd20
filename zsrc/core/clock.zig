//! Monotonic time and deadlines. Every timeout in zthread is turned into an absolute deadline on this
//! clock once, at the start of a wait, so retries after a signal or a spurious wake never extend it and a
//! change of the wall clock never moves it.
const std = @import("std");
const builtin = @import("builtin");

const os = builtin.os.tag;

pub const ns_per_s: u64 = std.time.ns_per_s;

/// Nanoseconds on the OS's monotonic clock (an arbitrary epoch, never moves backwards).
pub fn monotonicNs() u64 {
    return Impl.now();
}

/// An absolute point on the monotonic clock, or `forever`.
pub const Deadline = struct {
    ns: u64,

    pub const forever: Deadline = .{ .ns = std.math.maxInt(u64) };

    /// A deadline `timeout_ns` from now; saturates to `forever` instead of wrapping.
    pub fn fromTimeout(timeout_ns: u64) Deadline {
        return after(monotonicNs(), timeout_ns);
    }

    /// A deadline `timeout_ns` after `now_ns` (a `monotonicNs` reading the caller took); saturates likewise.
    pub fn after(now_ns: u64, timeout_ns: u64) Deadline {
        const sum = @addWithOverflow(now_ns, timeout_ns);
        if (sum[1] != 0) return forever;
        return .{ .ns = sum[0] };
    }

    pub fn isForever(self: Deadline) bool {
        return self.ns == forever.ns;
    }

    /// Nanoseconds left, 0 once the deadline has passed.
    pub fn remainingNs(self: Deadline) u64 {
        const now_ns = monotonicNs();
        return if (now_ns >= self.ns) 0 else self.ns - now_ns;
    }

    /// What `remainingNs` says, or null for `forever`.
    pub fn remainingNsOrNull(self: Deadline) ?u64 {
        return if (self.isForever()) null else self.remainingNs();
    }

    pub fn hasPassed(self: Deadline) bool {
        return !self.isForever() and monotonicNs() >= self.ns;
    }
};

const Impl = if (os == .windows)
    WindowsImpl
else if (os == .linux or os.isDarwin() or os == .freebsd or os == .netbsd or os == .openbsd)
    PosixImpl
else
    @compileError("zthread: no monotonic clock for this OS");

const PosixImpl = struct {
    extern "c" fn clock_gettime(clock: std.c.clockid_t, tp: *std.c.timespec) c_int;

    // https://man7.org/linux/man-pages/man2/clock_gettime.2.html
    // CLOCK_MONOTONIC: not affected by discontinuous jumps of the system time (settimeofday, NTP steps).
    fn now() u64 {
        var ts: std.c.timespec = undefined;
        const rc = clock_gettime(.MONOTONIC, &ts);
        // Only EINVAL (unknown clock) or EFAULT (bad pointer) can fail, and neither can happen here.
        std.debug.assert(rc == 0);
        return @as(u64, @intCast(ts.sec)) * ns_per_s + @as(u64, @intCast(ts.nsec));
    }
};

const WindowsImpl = struct {
    const windows = std.os.windows;
    extern "kernel32" fn QueryPerformanceCounter(count: *i64) callconv(.winapi) windows.BOOL;
    extern "kernel32" fn QueryPerformanceFrequency(freq: *i64) callconv(.winapi) windows.BOOL;

    // https://learn.microsoft.com/en-us/windows/win32/api/profileapi/nf-profileapi-queryperformancecounter
    // Monotonic, and never fails on Windows XP and later.
    fn now() u64 {
        var count: i64 = undefined;
        var freq: i64 = undefined;
        _ = QueryPerformanceCounter(&count);
        _ = QueryPerformanceFrequency(&freq);
        const c: u128 = @intCast(count);
        return @intCast(c * ns_per_s / @as(u128, @intCast(freq)));
    }
};

test "the monotonic clock never goes backwards" {
    var prev_ns = monotonicNs();
    for (0..10_000) |_| {
        const now_ns = monotonicNs();
        try std.testing.expect(now_ns >= prev_ns);
        prev_ns = now_ns;
    }
}

test "a huge timeout saturates to forever instead of wrapping" {
    const d = Deadline.fromTimeout(std.math.maxInt(u64) - 1);
    try std.testing.expect(d.isForever());
    try std.testing.expect(!d.hasPassed());
}

test "a zero timeout has already passed" {
    const d = Deadline.fromTimeout(0);
    try std.testing.expect(d.hasPassed());
    try std.testing.expectEqual(@as(u64, 0), d.remainingNs());
}

test "a deadline after a reading of the clock: that reading plus the timeout, saturating" {
    const now_ns = monotonicNs();
    try std.testing.expectEqual(now_ns + 5, Deadline.after(now_ns, 5).ns);
    try std.testing.expect(Deadline.after(now_ns, std.math.maxInt(u64)).isForever());
    try std.testing.expect(Deadline.after(now_ns -| std.time.ns_per_s, std.time.ns_per_ms).hasPassed());
}
