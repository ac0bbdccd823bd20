//! Blocking on a core lock from Python: the GIL is released while the thread waits, and signal
//! handlers run when a signal interrupts the wait.
const std = @import("std");
const core = @import("core");
const abi = @import("abi.zig");
const errors = @import("errors.zig");
const version = @import("version.zig");

/// Takes `lock`, waiting for at most `timeout_ns` (-1: forever; 0: a try that does not wait). Returns whether
/// it was acquired, or null with the exception of a signal handler that raised (Ctrl-C), the lock untouched.
/// Inline: the tries are the whole call for a free lock, on the caller's path.
pub inline fn acquire(lock: *core.Lock, timeout_ns: i64) ?bool {
    if (timeout_ns == 0) return lock.tryAcquireIfFree();
    if (lock.tryAcquire()) return true;
    return block(lock, timeout_ns);
}

/// The wait itself, once the tries failed.
noinline fn block(lock: *core.Lock, timeout_ns: i64) ?bool {
    // 3.15 (gh-123940): during finalization no other thread can run to release the lock, so refuse
    // to block rather than hang.
    if (version.atLeast(15) and errors.refuseAtShutdown("cannot acquire lock at interpreter shutdown")) return null;
    // The wait begins now, with the GIL still held: the lock's fairness clock (`since`: a signal does not
    // restart it) starts here, not when the thread next runs. Letting the GIL go wakes a thread that waits
    // for it, which the kernel may run on this CPU ahead of this one, and keep there for a millisecond or
    // more while the other CPU idles: a clock started after that made such a wait 2 ms, not 1, before the
    // lock was left to it (docs/DESIGN.md, "The fairness clock starts before the GIL is let go").
    const begun = core.clock.monotonicNs();
    const deadline: core.clock.Deadline = if (timeout_ns < 0) .forever else .after(begun, @intCast(timeout_ns));
    var since = begun;
    while (true) {
        // Read with the GIL still held, the lock just found held: a hand-over spinner under a GIL takes a
        // lock it finds free only once a thread has begun to wait since (`core.handover.acquire`).
        const seen = core.handover.waitsNow();
        switch (acquireWithoutGil(lock, deadline, &since, seen)) {
            .acquired => return true,
            .timed_out => return false,
            // Run Python's signal handlers; if one raised, propagate it. Otherwise try the lock (the handlers
            // ran with the GIL: it may have been freed meanwhile) and wait again until the same absolute
            // deadline.
            .interrupted => {
                if (abi.Py_MakePendingCalls() < 0) return null;
                if (lock.tryAcquire()) return true;
            },
        }
    }
}

/// Waits for `lock` with no timeout and no interruption (CPython's `RLock._acquire_restore`: an
/// exception there would leave a Condition's lock unheld under its `with` block). Signals that arrive
/// meanwhile are handled after the wait, by the interpreter's usual check.
pub fn acquireUninterruptibly(lock: *core.Lock) void {
    const begun = core.clock.monotonicNs(); // before the GIL is let go, as `block`'s
    const tstate = abi.PyEval_SaveThread();
    defer abi.PyEval_RestoreThread(tstate);
    _ = lock.acquireUninterrupted(.forever, begun);
}

fn acquireWithoutGil(lock: *core.Lock, deadline: core.clock.Deadline, since: *u64, seen: u32) core.Lock.AcquireResult {
    const tstate = abi.PyEval_SaveThread();
    defer abi.PyEval_RestoreThread(tstate);
    return core.handover.acquire(lock, deadline, since, seen);
}

/// Decides once per process, at the first import (with an attached thread state): the hand-over spin's mode
/// (`core.handover`: whether there is a GIL, and how many CPUs), and the locks' fairness mark (`fairMarkNs`).
/// Interpreters that import at once decide the same.
pub fn configureHandover() void {
    if (core.handover.configured()) return;
    const gil = abi.gilEnabled();
    core.Lock.setFairAfter(fairMarkNs(gil));
    core.handover.configure(std.Thread.getCpuCount() catch 1, gil);
}

/// How long a waiter yields to barging threads before the lock is left to it. Under a GIL on CPython
/// 3.10-3.13, 250 us: there CPython's own lock wakes a waiter at every release, and it takes the lock
/// within about 0.1 ms, so the longest waits of its fairness workload are the host's stalls (2.3-4.8 ms on
/// an AMD host); zthread's waiters, kept out by barging up to the mark, waited a stall plus 1 ms
/// (4.3-5.4 ms, past the 5 ms switch interval at times). With 250 us they wait 2.4-3.5 ms, for about 12 %
/// of the rate (still 4.2-5.7 times CPython's). From 3.14, and without a GIL, the core's 1 ms (CPython's PyMutex's
/// and Go's): CPython 3.14's own lock lets a running thread barge for 50 ms and more, and there the rate is
/// what a shorter mark would cost (0.75-0.88 of CPython's with 250 us, against 0.83-0.99).
/// docs/DESIGN.md, "The fairness mark per CPython". (A GIL that a free-threaded build turns on after the first
/// import is not seen: the mark stays 1 ms there, as the spin's mode stays `without_gil`.)
fn fairMarkNs(gil: bool) u64 {
    return if (gil and !version.atLeast(14)) 250 * std.time.ns_per_us else core.Lock.default_fair_after_ns;
}
