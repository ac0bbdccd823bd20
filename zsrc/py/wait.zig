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
    const mode = handover.mode.load(.monotonic);
    if (mode == .unset or mode == .off) return lock.acquireWaiting(deadline, since);
    handover.barged.bump(); // this thread begins to wait (and has let the GIL go, if any)
    return if (mode == .gil) handover.acquireUnderGil(lock, deadline, since) else handover.acquireFreeThreaded(lock, deadline, since);
}

/// A waiter parked in the kernel pays a wake-up through the kernel for each hand-over of a lock from one thread
/// to another (tens of microseconds on a VM, whose idle CPU must be woken), and `Condition`, `Event` and `Queue`
/// hand over a waiter lock on every notify. So a waiter spins instead (`for_release_ns`), on a lock nobody else
/// is parked on, with the GIL released. It must not take the lock from a releaser that takes it straight back
/// (barging, which keeps a lock fast): it takes a lock freed under it once a thread has begun to wait for a
/// lock since it last saw the lock held (`waits`; the releaser is most likely that thread), or, without a GIL,
/// once the lock has stayed free `settle_ns`. docs/DESIGN.md, "Spinning through a hand-over", has the
/// measurements and what it costs.
pub const handover = struct {
    /// Set by the first import in the process (`configure`): `off` with one CPU; `gil` when the interpreter
    /// has a GIL. (A GIL that a free-threaded build turns on later is not seen: its waiters then spin without
    /// the one-spinner limit, which costs speed.)
    pub const Mode = enum(u8) { unset, off, without_gil, gil };
    var mode = std.atomic.Value(Mode).init(.unset);
    /// Under a GIL, held by the one thread that spins: on the 2-CPU machines this is tuned on, a second spinner
    /// would take the CPU of a thread that runs, and one thread runs Python, so one hand-over is under way at a
    /// time. Interpreters with GILs of their own share it, and the counter below: that costs them speed only.
    var slot = std.atomic.Value(bool).init(false);
    /// Bumped by every thread that begins to wait for a lock here (`acquire`, after releasing the GIL, if
    /// any; not `acquireUninterruptibly`): a spinner takes a lock freed under it after a bump, when its
    /// releaser is most likely waiting, not running (`core.Lock.SpinGate`).
    var waits = std.atomic.Value(u32).init(0);
    /// Under a GIL, a waiter that has seen its lock barged sleeps on `waits` until a thread begins to wait
    /// (the barging thread, most likely, which has let the GIL go), or its fairness mark, not woken by
    /// every release of a lock the running thread takes straight back (`core.Lock.acquireBargeable`).
    var barged_sleepers = std.atomic.Value(u32).init(0);
    const barged: core.Lock.BargedWait = .{ .word = &waits, .sleepers = &barged_sleepers };
    /// Threads zthread is starting that have not entered Python yet (`threadStarting` to `threadEntered`).
    /// While there are any, nobody spins: a thread that starts another waits for it next (`Thread.start()`
    /// waits for its `_started` Event), and the new thread needs an idle CPU woken, a thread state and the
    /// GIL before it can release anything, longer than the spin on the VMs measured. A spinner that runs
    /// meanwhile costs the new thread: each page its start and its end unmap (CPython's frame stack, glibc's
    /// stack) must then be flushed from the spinner's CPU by an interrupt, where an idle CPU needs none
    /// (docs/DESIGN.md, "A thread that is starting: nobody spins").
    var starting = std.atomic.Value(u32).init(0);
    /// How often a spinner under a GIL may see its lock taken again by a running thread before it stops
    /// spinning and sleeps apart: in a ping-pong the lock is released once, to the spinner.
    const max_retakes = 2;

    const for_release_ns: u64 = 30 * std.time.ns_per_us;
    /// Without a GIL, how long a lock freed under a spinner must stay free before it takes it, if no thread
    /// began to wait meanwhile. A Python loop that releases a lock and takes it again (`with lock:` in a
    /// loop) does so within a few hundred nanoseconds on 3.13t.
    const settle_ns: u64 = std.time.ns_per_us;
    /// Without a GIL, how long a spinner spins on its CPU before it yields it between reads
    /// (`core.spin.Pacer.yield_from_ns`): free-threaded threads may outnumber the CPUs (the fairness
    /// workload runs 4 on 2), and a spinner would keep the thread it waits for queued behind it until the
    /// scheduler's tick. A hand-over between two running threads is over sooner: a round trip of the
    /// `handoff` metric takes 0.5-0.8 us on 3.13t. docs/DESIGN.md, "Without a GIL, a spinner yields its CPU".
    const yield_after_ns: u64 = 2 * std.time.ns_per_us;

    /// Decides once per process, at the first import (with an attached thread state).
    /// Interpreters that import at once may both decide: they find the same.
    pub fn configure() void {
        if (mode.load(.monotonic) != .unset) return;
        const cpus = std.Thread.getCpuCount() catch 1;
        mode.store(if (cpus < 2) .off else if (abi.gilEnabled()) .gil else .without_gil, .monotonic);
    }

    fn acquireUnderGil(lock: *core.Lock, deadline: core.clock.Deadline, since: *u64) core.Lock.AcquireResult {
        // A lock others are parked on is contended, not handed over: spinning there only takes CPUs from
        // the threads its releases wake.
        const grant = (if (lock.isContended()) null else Grant.underGil()) orelse
            return lock.acquireBargeable(deadline, since, barged, false);
        const spun = spin(lock, grant, deadline, since, .{ .moves = &waits, .max_retakes = max_retakes });
        grant.leave();
        return if (spun == .acquired) .acquired else lock.acquireBargeable(deadline, since, barged, spun == .barged);
    }

    /// Without a GIL every waiter on a lock nobody is parked on (and none starves) may spin: the threads run
    /// in parallel. After the spin, or at once on a contended lock, it parks without the core's short spin,
    /// which takes a lock the moment it is free: two threads in a loop around one lock would take turns at
    /// every release, and each turn moves the data of the critical section from one CPU's cache to the
    /// other's (twice as slow as one thread taking it again and again).
    fn acquireFreeThreaded(lock: *core.Lock, deadline: core.clock.Deadline, since: *u64) core.Lock.AcquireResult {
        if (!lock.isContended()) {
            if (Grant.withoutGil()) |grant| {
                if (spin(lock, grant, deadline, since, .{ .moves = &waits, .settle_ns = settle_ns }) == .acquired) return .acquired;
            }
        }
        return lock.acquireAfterSpin(deadline, since);
    }

    fn spin(lock: *core.Lock, grant: Grant, deadline: core.clock.Deadline, since: *u64, gate: core.Lock.SpinGate) core.Lock.Spun {
        const now = core.clock.monotonicNs();
        if (since.* == 0) since.* = now; // the spin counts toward the waiter's fairness clock
        return lock.spinAcquire(grant.pacer(now, deadline.ns), gate);
    }

    /// Polls `done(ctx)` as a hand-over spinner would (the same grant and pacing as a lock's waiter): true once
    /// it says so, false if it may not spin or gave up. Call without the GIL.
    pub fn spinUntil(comptime done: anytype, ctx: anytype) bool {
        const grant = Grant.take() orelse return false;
        defer grant.leave();
        var pacer = grant.pacer(core.clock.monotonicNs(), std.math.maxInt(u64));
        while (!done(ctx)) if (!pacer.pause()) return false;
        return true;
    }

    /// Leave to spin through a hand-over, and how: every spinner (a lock's waiter, a joiner) takes one and
    /// spins by its pacing. None while a thread is starting (`starting`). Under a GIL it is the one slot
    /// (`slot`): one spinner at a time, which never yields its CPU (a yield there cost rate and did not
    /// shorten the longest wait); without a GIL every thread may spin, yielding its CPU after `yield_after_ns`.
    const Grant = struct {
        gil: bool,

        /// The grant for the running mode, or null: spinning is off (one CPU; before `configure`), a
        /// thread is starting, or another thread spins under the GIL.
        fn take() ?Grant {
            return switch (mode.load(.monotonic)) {
                .unset, .off => null,
                .without_gil => withoutGil(),
                .gil => underGil(),
            };
        }

        fn withoutGil() ?Grant {
            return if (starting.load(.monotonic) != 0) null else .{ .gil = false };
        }

        fn underGil() ?Grant {
            if (starting.load(.monotonic) != 0) return null;
            if (slot.load(.monotonic) or slot.cmpxchgStrong(false, true, .acquire, .monotonic) != null) return null;
            return .{ .gil = true };
        }

        fn leave(grant: Grant) void {
            if (grant.gil) slot.store(false, .release);
        }

        /// The pacing of a spin that begins at `now`: `for_release_ns` long, ending at `until_ns` if sooner.
        fn pacer(grant: Grant, now: u64, until_ns: u64) core.spin.Pacer {
            return .{
                .until_ns = @min(now +| for_release_ns, until_ns),
                .yield_from_ns = if (grant.gil) std.math.maxInt(u64) else now +| yield_after_ns,
            };
        }
    };

    /// A thread zthread started has left Python for good (its thread state gone, the GIL released, its
    /// sentinel released): like a thread that begins to wait, it is done with whatever lock it released
    /// last, so a spinner may take that lock now rather than at the end of its spin. `start_new_thread(f)`
    /// then `acquire()` of a lock `f` releases, and a 3.10-3.12 `join()` on the thread's sentinel, are
    /// such hand-overs (docs/DESIGN.md, "A thread that ends lets its spinner go").
    pub fn threadLeftPython() void {
        const m = mode.load(.monotonic);
        if (m != .unset and m != .off) barged.bump();
    }

    /// A thread zthread starts is about to be made (`threadEntered` once it runs Python, or its start failed).
    pub fn threadStarting() void {
        _ = starting.fetchAdd(1, .monotonic);
    }

    pub fn threadEntered() void {
        _ = starting.fetchSub(1, .monotonic);
    }

    /// In a forked child only the forking thread exists: a slot held by another thread at the fork is free,
    /// and no thread is starting.
    pub fn afterForkInChild() void {
        slot.store(false, .monotonic);
        starting.store(0, .monotonic);
        barged_sleepers.store(0, .monotonic);
    }
};
