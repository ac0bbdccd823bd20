//! Blocking on a core lock from Python: the GIL is released while the thread waits, and signal
//! handlers run when a signal interrupts the wait.
const std = @import("std");
const core = @import("core");
const abi = @import("abi.zig");
const errors = @import("errors.zig");
const version = @import("version.zig");

/// Waits for `lock` for at most `timeout_ns` (-1: forever). Returns whether it was acquired, or null
/// with the exception of a signal handler that raised (Ctrl-C), the lock untouched.
pub fn acquire(lock: *core.Lock, timeout_ns: i64) ?bool {
    // 3.15 (gh-123940): during finalization no other thread can run to release the lock, so refuse
    // to block rather than hang.
    if (version.atLeast(15) and errors.refuseAtShutdown("cannot acquire lock at interpreter shutdown")) return null;
    const deadline: core.clock.Deadline = if (timeout_ns < 0) .forever else .fromTimeout(@intCast(timeout_ns));
    var since: u64 = 0; // when the wait began: a signal does not restart the lock's fairness clock
    while (true) {
        switch (acquireWithoutGil(lock, deadline, &since)) {
            .acquired => return true,
            .timed_out => return false,
            // Run Python's signal handlers; if one raised, propagate it. Otherwise wait again until
            // the same absolute deadline.
            .interrupted => if (abi.Py_MakePendingCalls() < 0) return null,
        }
    }
}

/// Waits for `lock` with no timeout and no interruption (CPython's `RLock._acquire_restore`: an
/// exception there would leave a Condition's lock unheld under its `with` block). Signals that arrive
/// meanwhile are handled after the wait, by the interpreter's usual check.
pub fn acquireUninterruptibly(lock: *core.Lock) void {
    const tstate = abi.PyEval_SaveThread();
    defer abi.PyEval_RestoreThread(tstate);
    _ = lock.acquireUninterrupted(.forever);
}

fn acquireWithoutGil(lock: *core.Lock, deadline: core.clock.Deadline, since: *u64) core.Lock.AcquireResult {
    const tstate = abi.PyEval_SaveThread();
    defer abi.PyEval_RestoreThread(tstate);
    switch (handover.mode.load(.monotonic)) {
        .unset, .off => return lock.acquireWaiting(deadline, since),
        .without_gil => return handover.acquire(lock, deadline, since, null),
        .gil => {
            _ = handover.gil_releases.fetchAdd(1, .monotonic);
            return handover.acquire(lock, deadline, since, &handover.gil_releases);
        },
    }
}

/// A waiter parked in the kernel pays a wake-up through the kernel for each hand-over of a lock from one thread
/// to another (tens of microseconds on a VM, whose idle CPU must be woken), and `Condition`, `Event` and `Queue`
/// hand over a waiter lock on every notify. So one waiter at a time spins instead (`for_release_ns`), on a lock
/// nobody else is parked on, with the GIL released. Without a GIL it takes the lock as soon as it is free.
/// Under a GIL the releaser holds the GIL and runs on, and may take the lock straight back (barging): the
/// spinner takes a freed lock once a thread has released the GIL to wait since it last saw the lock held
/// (`core.Lock.spinAcquire`'s `moves`); then the GIL is most likely free too, and the waiter takes both
/// without sleeping. docs/DESIGN.md, "Spinning through a hand-over", has the measurements and what it costs.
pub const handover = struct {
    /// Set by the first import in the process (`configure`): `off` with one CPU; `gil` when the interpreter
    /// has a GIL, and spinners wait for `gil_releases` to move. (A GIL that a free-threaded build turns on
    /// later is not seen: its spinners then take a freed lock from a barging releaser, which costs speed.)
    pub const Mode = enum(u8) { unset, off, without_gil, gil };
    var mode = std.atomic.Value(Mode).init(.unset);
    /// Held by the one thread that spins: on the 2-CPU machines this is tuned on, a second spinner would take
    /// the CPU of a thread that runs (under a GIL one thread runs Python, so one hand-over is under way at a
    /// time). Interpreters with GILs of their own share it, and the counter below: that costs them speed only.
    var slot = std.atomic.Value(bool).init(false);
    /// Bumped by every thread that releases the GIL to wait for a lock: a spinner takes a lock freed under it
    /// only after a bump, when its releaser is most likely waiting, not running (`core.Lock.spinAcquire`).
    var gil_releases = std.atomic.Value(u32).init(0);

    const for_release_ns: u64 = 30 * std.time.ns_per_us;

    /// Decides once per process, at the first import (with an attached thread state).
    /// Interpreters that import at once may both decide: they find the same.
    pub fn configure() void {
        if (mode.load(.monotonic) != .unset) return;
        const cpus = std.Thread.getCpuCount() catch 1;
        mode.store(if (cpus < 2) .off else if (abi.gilEnabled()) .gil else .without_gil, .monotonic);
    }

    fn acquire(lock: *core.Lock, deadline: core.clock.Deadline, since: *u64, moves: ?*const std.atomic.Value(u32)) core.Lock.AcquireResult {
        // A lock others are parked on is contended, not handed over: spinning there only takes CPUs from
        // the threads its releases wake.
        if (lock.isContended() or !take()) return lock.acquireWaiting(deadline, since);
        const now = core.clock.monotonicNs();
        if (since.* == 0) since.* = now; // the spin counts toward the waiter's fairness clock
        const caught = lock.spinAcquire(@min(now +| for_release_ns, deadline.ns), moves);
        slot.store(false, .release);
        return if (caught) .acquired else lock.acquireWaiting(deadline, since);
    }

    /// In a forked child only the forking thread exists: a slot held by another thread at the fork is free.
    pub fn afterForkInChild() void {
        slot.store(false, .monotonic);
    }

    fn take() bool {
        return !slot.load(.monotonic) and slot.cmpxchgStrong(false, true, .acquire, .monotonic) == null;
    }
};
