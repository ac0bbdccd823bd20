//! Spinning through a hand-over: when a thread that waits for a lock (or a joiner, for a thread's end) spins
//! instead of parking at once, and when it may take a lock freed under it. Python-free: the CPython layer
//! says once whether there is a GIL (`configure`) and calls `acquire` with the GIL released; its threads
//! report when they start, enter Python and leave it.
//!
//! A waiter parked in the kernel pays a wake-up through the kernel for each hand-over of a lock from one thread
//! to another (tens of microseconds on a VM, whose idle CPU must be woken), and `Condition`, `Event` and `Queue`
//! hand over a waiter lock on every notify. So a waiter spins instead (`for_release_ns`), on a lock nobody else
//! is parked on, with the GIL released. It must not take the lock from a releaser that takes it straight back
//! (barging, which keeps a lock fast): it takes a lock freed under it once a thread has begun to wait for a
//! lock since it last saw the lock held (`waits`; the releaser is most likely that thread), or, without a GIL,
//! once the lock has stayed free `settle_ns`. docs/DESIGN.md, "Spinning through a hand-over", has the
//! measurements and what it costs.

const std = @import("std");
const clock = @import("clock.zig");
const spin = @import("spin.zig");
const futex = @import("futex.zig");
const Lock = @import("lock.zig").Lock;

/// Set once per process (`configure`; the CPython layer: at the first import): `off` with one CPU; `gil`
/// when the interpreter has a GIL. (A GIL that a free-threaded build turns on later is not seen: its waiters then spin without
/// the one-spinner limit, which costs speed.)
pub const Mode = enum(u8) { unset, off, without_gil, gil };
var mode = std.atomic.Value(Mode).init(.unset);
/// Under a GIL, held by the one thread that spins: on the 2-CPU machines this is tuned on, a second spinner
/// would take the CPU of a thread that runs, and one thread runs Python, so one hand-over is under way at a
/// time. Interpreters with GILs of their own share it, and the counter below: that costs them speed only.
var slot = std.atomic.Value(bool).init(false);
/// Bumped by every thread that begins to wait for a lock here (`acquire`, called with the GIL released, if
/// any; the CPython layer's uninterruptible wait takes no part): a spinner takes a lock freed under it after a bump, when its
/// releaser is most likely waiting, not running (`Lock.SpinGate`).
var waits = std.atomic.Value(u32).init(0);
/// Under a GIL, a waiter that has seen its lock barged sleeps on `waits` until a thread begins to wait
/// (the barging thread, most likely, which has let the GIL go), or its fairness mark, not woken by
/// every release of a lock the running thread takes straight back (`Lock.acquireBargeable`).
var barged_sleepers = std.atomic.Value(u32).init(0);
const barged: Lock.BargedWait = .{ .word = &waits, .sleepers = &barged_sleepers };
/// Threads being started (by the CPython layer) that have not entered Python yet (`threadStarting` to
/// `threadEntered`).
/// While there are any, nobody spins: a thread that starts another waits for it next (`Thread.start()`
/// waits for its `_started` Event), and the new thread needs an idle CPU woken, a thread state and the
/// GIL before it can release anything, longer than the spin on the VMs measured. A spinner that runs
/// meanwhile costs the new thread: each page its start and its end unmap (CPython's frame stack, glibc's
/// stack) must then be flushed from the spinner's CPU by an interrupt, where an idle CPU needs none
/// (docs/DESIGN.md, "A thread that is starting: nobody spins").
///
/// The count is ignored once the last start began `starting_for_ns` ago: a thread that never enters Python
/// (a thread state made while its interpreter finalizes: CPython ends or parks the thread inside
/// `PyEval_AcquireThread`) must not turn spinning off for good. A start takes 30-200 us on the hosts measured.
var starting = std.atomic.Value(u32).init(0);
/// When the last start began (monotonic ns).
var started_at_ns = std.atomic.Value(u64).init(0);
const starting_for_ns: u64 = 10 * std.time.ns_per_ms;
/// How often a spinner under a GIL may see its lock taken again by a running thread before it stops
/// spinning and sleeps apart: in a ping-pong the lock is released once, to the spinner.
const max_retakes = 2;

const for_release_ns: u64 = 30 * std.time.ns_per_us;
/// Under a GIL, how long a spinner whose lock is freed by a thread that runs on (with the GIL, most likely)
/// spins on for that thread to begin to wait, from when it sees the lock free, past `for_release_ns` if need
/// be (`Lock.SpinGate.free_wait_ns`; a lock taken back meanwhile ends the spin at its own end again, and
/// the spin sees at most `max_retakes` releases). A producer and a consumer through a `Queue(maxsize=64)`
/// take turns every 64 items, each turn one such release: with the spin's own end (30 us from its start)
/// the thread that took its lock slept in CPython's `take_gil` at most of the turns, with 50 us from the
/// release on 3.13 and 100 us on 3.10 (slower Python) at almost none on an Intel host; on an AMD host 3.10's
/// drain most likely outlasted 100 us in some processes (`queue_stream` 0.57-0.63 or 0.75-0.83 of CPython's),
/// and 200 us held at 0.59-0.66 in every run. Its price: a releaser that lets the GIL go otherwise leaves the
/// spinner spinning up to this long on a free lock and a free GIL: `FreeWaits` decides when to wait
/// (docs/DESIGN.md, "A lock freed by a thread that runs on", and its "200 us, not 100").
const free_wait_ns: u64 = 200 * std.time.ns_per_us;
/// Under a GIL, how long a waiter that finds the spinner's slot held waits for it (`Grant.takeSlot`).
const slot_wait_ns: u64 = 2 * std.time.ns_per_us;
/// Without a GIL, how long a lock freed under a spinner must stay free before it takes it, if no thread
/// began to wait meanwhile. A Python loop that releases a lock and takes it again (`with lock:` in a
/// loop) does so within a few hundred nanoseconds on 3.13t.
const settle_ns: u64 = std.time.ns_per_us;
/// Without a GIL, how long a spinner spins on its CPU before it yields it between reads
/// (`spin.Pacer.yield_from_ns`): free-threaded threads may outnumber the CPUs (the fairness
/// workload runs 4 on 2), and a spinner would keep the thread it waits for queued behind it until the
/// scheduler's tick. 0: from its first clock read on, after 16 reads (about half a microsecond), which
/// is as long as one leg of a hand-over between two running threads takes (a round trip of the `handoff`
/// metric: 0.5-0.8 us on 3.13t); 2 us made four threads on one lock 1.1-1.2x slower than CPython's
/// (`contended4`). docs/DESIGN.md, "Without a GIL, a spinner yields its CPU".
const yield_after_ns: u64 = 0;

/// Whether `configure` has decided.
pub fn configured() bool {
    return mode.load(.monotonic) != .unset;
}

/// Decides once per process (the CPython layer: at the first import): spinning is off with one CPU, and
/// with a GIL one thread spins at a time. Callers that decide at once find the same.
pub fn configure(cpus: usize, gil: bool) void {
    if (configured()) return;
    mode.store(if (cpus < 2) .off else if (gil) .gil else .without_gil, .monotonic);
}

/// What `acquire`'s caller reads when it finds the lock held, before it lets the GIL go (if there is one).
pub fn waitsNow() u32 {
    return waits.load(.seq_cst);
}

/// Takes `lock` for a thread that has let the GIL go (if there is one), waiting as the mode says: with
/// spinning off, the core's wait; else the thread counts as beginning to wait (`waits`) and may spin first.
/// `seen`: `waitsNow()` when the caller found the lock held, before it let the GIL go.
pub fn acquire(lock: *Lock, deadline: clock.Deadline, since: *u64, seen: u32) Lock.AcquireResult {
    const m = mode.load(.monotonic);
    if (m == .unset or m == .off) return lock.acquireWaiting(deadline, since);
    barged.bump(lock); // this thread begins to wait (and has let the GIL go, if any)
    return if (m == .gil) acquireUnderGil(lock, deadline, since, seen +% 1) else acquireFreeThreaded(lock, deadline, since);
}

/// `held_moves`: `waits` when the caller found the lock held, with the GIL, plus its own bump since. A lock
/// free at the spin's first look was freed since, and if nobody else has begun to wait meanwhile, by a thread
/// that took the GIL this one let go and may be running still: the spinner takes it once a thread begins to
/// wait (that thread has let the GIL go), as one freed under it. Taken at once, it made the spinner wait for
/// the GIL in CPython's `take_gil`, asleep, and the thread switch that woke it cost the hand-over the spin is
/// for (docs/DESIGN.md, "A waiter waits a moment for the spinner's slot", its paragraph "A lock free at the
/// spin's first look").
fn acquireUnderGil(lock: *Lock, deadline: clock.Deadline, since: *u64, held_moves: u32) Lock.AcquireResult {
    // A thread whose release has just left the lock to starving waiters, and that wants it back (a loop
    // around the lock), sleeps apart at once, as one that has seen its lock barged: the starving waiter
    // that takes the lock runs next (with the GIL this thread has let go) and takes it again after each
    // release, so on the lock word the first of those releases would wake it only to find it taken (a
    // wake-up through the kernel paid by the running thread, and one more thread queued on its CPU). Not
    // every waiter that finds a lock left to starving waiters: one that comes to it from elsewhere may find
    // it freed for good at the next release (its holder gone to wait on something that is not a lock here,
    // which wakes no sleeper apart). docs/DESIGN.md, "One slot per sleeper apart for its mark; a thread
    // that has left its lock to starving waiters sleeps apart at once".
    if (lock.leftByThisThread()) return lock.acquireBargeable(deadline, since, barged, true);
    // A lock others are parked on is contended, not handed over: spinning there only takes CPUs from
    // the threads its releases wake.
    const grant = (if (lock.isContended()) null else Grant.get(true)) orelse
        return lock.acquireBargeable(deadline, since, barged, false);
    const free_wait = free_waits.next();
    const outcome = spinFor(lock, grant, deadline, since, gilGate(held_moves, free_wait));
    const spun = outcome.spun;
    grant.leave();
    if (free_wait != 0) {
        // Taken after the spin's own end: the wait for the releaser paid off. Given up on a free lock: it
        // ran out (the releaser let the GIL go otherwise, or ran on past it).
        if (spun == .acquired) {
            if (clock.monotonicNs() >= outcome.own_end_ns) free_waits.learn(true);
        } else if (spun == .gave_up and !lock.isLocked()) free_waits.learn(false);
    }
    return if (spun == .acquired) .acquired else lock.acquireBargeable(deadline, since, barged, spun == .barged);
}

/// When a spinner under a GIL takes a lock freed under it: once a thread has begun to wait since the caller
/// saw it held, spinning for that up to `free_wait` (`free_waits.next()`) from the release; `max_retakes`
/// releases at most.
fn gilGate(held_moves: u32, free_wait: u64) Lock.SpinGate {
    return .{ .moves = &waits, .moves_when_held = held_moves, .max_retakes = max_retakes, .free_wait_ns = free_wait };
}

/// Whether a spinner under a GIL waits `free_wait_ns` for a releaser that runs on. It pays off when that
/// thread then begins to wait here (a `Queue` stream's turns); it costs the waiter up to `free_wait_ns` when
/// the releaser lets the GIL go otherwise (I/O, `time.sleep`), the lock and the GIL both free meanwhile (a
/// scratch script: 15 us from the release to the waiter's return without the wait, 101 us with a 100 us wait,
/// CPython's 32-34). So the process learns, as adaptive spinning does: after `misses_max` waits in a row that ran out,
/// one spinner in `probe_every` waits, until a wait pays off again. Shared by every lock and interpreter of
/// the process; a race between two updates only moves the guess.
const FreeWaits = struct {
    misses: std.atomic.Value(u32) = .init(0),
    probes: std.atomic.Value(u32) = .init(0),
    const misses_max = 2;
    const probe_every = 16;

    /// How long the next spinner waits for a releaser that runs on: `free_wait_ns`, or 0.
    fn next(self: *FreeWaits) u64 {
        if (self.misses.load(.monotonic) < misses_max) return free_wait_ns;
        return if (self.probes.fetchAdd(1, .monotonic) % probe_every == 0) free_wait_ns else 0;
    }

    /// A wait that paid off (`true`) or ran out.
    fn learn(self: *FreeWaits, paid_off: bool) void {
        if (paid_off) return self.misses.store(0, .monotonic);
        const m = self.misses.load(.monotonic);
        if (m < misses_max) self.misses.store(m + 1, .monotonic);
    }
};
var free_waits: FreeWaits = .{};

/// Without a GIL every waiter on a lock nobody is parked on (and none starves) may spin: the threads run
/// in parallel. After the spin, or at once on a contended lock, it parks without the core's short spin,
/// which takes a lock the moment it is free: two threads in a loop around one lock would take turns at
/// every release, and each turn moves the data of the critical section from one CPU's cache to the
/// other's (twice as slow as one thread taking it again and again).
fn acquireFreeThreaded(lock: *Lock, deadline: clock.Deadline, since: *u64) Lock.AcquireResult {
    if (!lock.isContended()) {
        if (Grant.get(false)) |grant| {
            if (spinFor(lock, grant, deadline, since, .{ .moves = &waits, .settle_ns = settle_ns }).spun == .acquired) return .acquired;
        }
    }
    return lock.acquireAfterSpin(deadline, since);
}

/// How a spin ended, and when its pacer's own end was (before any `free_wait_ns`).
const SpinOutcome = struct { spun: Lock.Spun, own_end_ns: u64 };

fn spinFor(lock: *Lock, grant: Grant, deadline: clock.Deadline, since: *u64, gate: Lock.SpinGate) SpinOutcome {
    const now = clock.monotonicNs();
    if (since.* == 0) since.* = now; // the spin counts toward the waiter's fairness clock
    const pacer = grant.pacer(now, deadline.ns);
    return .{ .spun = lock.spinAcquire(pacer, gate), .own_end_ns = pacer.until_ns };
}

/// Polls `done(ctx)` as a hand-over spinner would (the same grant and pacing as a lock's waiter): true once
/// it says so, false if it may not spin or gave up. Call without the GIL.
pub fn spinUntil(comptime done: anytype, ctx: anytype) bool {
    const grant = Grant.take() orelse return false;
    defer grant.leave();
    var pacer = grant.pacer(clock.monotonicNs(), std.math.maxInt(u64));
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
    /// thread is starting, or another thread spins under the GIL and did not leave within `slot_wait_ns`.
    fn take() ?Grant {
        return switch (mode.load(.monotonic)) {
            .unset, .off => null,
            .without_gil => get(false),
            .gil => get(true),
        };
    }

    /// The grant with spinning on, with or without a GIL (the caller knows the mode).
    fn get(gil: bool) ?Grant {
        return getWithin(gil, slot_wait_ns);
    }

    fn getWithin(gil: bool, slot_wait: u64) ?Grant {
        if (aThreadIsStarting()) return null;
        if (!gil) return .{ .gil = false };
        if (!takeSlot(slot_wait)) return null;
        const grant: Grant = .{ .gil = true };
        // A start may have begun while it waited for the slot.
        if (aThreadIsStarting()) {
            grant.leave();
            return null;
        }
        return grant;
    }

    /// Under a GIL, the one spinner's slot, waiting up to `slot_wait` (`slot_wait_ns`) for it if it is held: the thread
    /// that holds it most often spins for a lock that this very thread has just released (and has let the
    /// GIL go since, bumping `waits`), so it takes that lock and leaves the slot within a microsecond.
    /// Without the wait, in a hand-over through two locks (a baton, a Queue or Condition round trip) the
    /// thread that begins to wait found the slot held every time and parked, and each round trip paid a
    /// wake-up through the kernel (docs/DESIGN.md, "A waiter waits a moment for the spinner's slot").
    fn takeSlot(slot_wait: u64) bool {
        if (trySlot()) return true;
        const until = clock.monotonicNs() +| slot_wait;
        var reads: u32 = 0;
        while (true) : (reads +%= 1) {
            std.atomic.spinLoopHint();
            if (trySlot()) return true;
            if (reads % 16 == 15 and clock.monotonicNs() >= until) return false;
        }
    }

    /// Takes the slot if it is free (read first: a held slot costs a load, not a locked compare-and-swap).
    fn trySlot() bool {
        return !slot.load(.monotonic) and slot.cmpxchgStrong(false, true, .acquire, .monotonic) == null;
    }

    fn leave(grant: Grant) void {
        if (grant.gil) slot.store(false, .release);
    }

    /// The pacing of a spin that begins at `now`: `for_release_ns` long, ending at `until_ns` if sooner; a
    /// gate's `free_wait_ns` may move its end later, never past `until_ns` (the waiter's deadline).
    fn pacer(grant: Grant, now: u64, until_ns: u64) spin.Pacer {
        return .{
            .until_ns = @min(now +| for_release_ns, until_ns),
            .limit_ns = until_ns,
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
    if (m != .unset and m != .off) barged.bump(null);
}

fn aThreadIsStarting() bool {
    if (starting.load(.monotonic) == 0) return false;
    return clock.monotonicNs() -| started_at_ns.load(.monotonic) < starting_for_ns;
}

/// A thread zthread starts is about to be made (`threadEntered` once it runs Python, or its start failed).
pub fn threadStarting() void {
    started_at_ns.store(clock.monotonicNs(), .monotonic);
    _ = starting.fetchAdd(1, .monotonic);
}

pub fn threadEntered() void {
    _ = starting.fetchSub(1, .monotonic);
}

/// In a forked child only the forking thread exists: a slot held by another thread at the fork is free, no
/// thread is starting, and none sleeps apart. Called by the core's fork handler (`fork.zig`).
pub fn afterForkInChild() void {
    slot.store(false, .monotonic);
    starting.store(0, .monotonic);
    barged_sleepers.store(0, .monotonic);
}

const testing = std.testing;
const sleepNs = @import("lock.zig").sleepNs;

/// Tests set the mode themselves (the CPython layer decides it once per process) and leave it unset.
fn resetForTest(m: Mode) void {
    mode.store(m, .monotonic);
    slot.store(false, .monotonic);
    starting.store(0, .monotonic);
}

test "the leave to spin: none with spinning off or while a thread starts; one spinner under a GIL; every thread without" {
    defer resetForTest(.unset);
    for ([_]Mode{ .unset, .off }) |m| {
        resetForTest(m);
        try testing.expect(Grant.take() == null);
    }
    resetForTest(.gil);
    const first = Grant.take() orelse return error.TestUnexpectedResult;
    try testing.expect(Grant.take() == null); // one spinner at a time
    first.leave();
    (Grant.take() orelse return error.TestUnexpectedResult).leave();
    threadStarting();
    threadStarting();
    try testing.expect(Grant.take() == null);
    threadEntered();
    try testing.expect(Grant.take() == null); // one is still starting
    threadEntered();
    (Grant.take() orelse return error.TestUnexpectedResult).leave();
    // A thread that never entered Python (its interpreter finalizing) stops counting after `starting_for_ns`.
    threadStarting();
    try testing.expect(Grant.take() == null);
    started_at_ns.store(clock.monotonicNs() -| starting_for_ns, .monotonic);
    (Grant.take() orelse return error.TestUnexpectedResult).leave();

    resetForTest(.without_gil);
    const a = Grant.take() orelse return error.TestUnexpectedResult;
    const b = Grant.take() orelse return error.TestUnexpectedResult;
    a.leave();
    b.leave();
    threadStarting();
    try testing.expect(Grant.take() == null);
    afterForkInChild(); // the thread being started is not in the child
    (Grant.take() orelse return error.TestUnexpectedResult).leave();

    // The pacing: `for_release_ns` from its start, or less to a sooner end; under a GIL it never yields.
    const under_gil = (Grant{ .gil = true }).pacer(1000, std.math.maxInt(u64));
    try testing.expectEqual(1000 + for_release_ns, under_gil.until_ns);
    try testing.expectEqual(std.math.maxInt(u64), under_gil.yield_from_ns);
    const free = (Grant{ .gil = false }).pacer(1000, 5000);
    try testing.expectEqual(@as(u64, 5000), free.until_ns);
    try testing.expectEqual(1000 + yield_after_ns, free.yield_from_ns);
    // Its end may move (a lock freed under it: `free_wait_ns`) up to the caller's deadline, not past it.
    try testing.expectEqual(@as(u64, 5000), free.limit_ns);
    try testing.expectEqual(std.math.maxInt(u64), under_gil.limit_ns);
    // Under a GIL a freed lock is taken after a bump since the caller saw it held, and the spin waits for
    // one up to `free_wait_ns` from the release, with a finite count of releases.
    const gate = gilGate(41, free_wait_ns);
    try testing.expectEqual(&waits, gate.moves.?);
    try testing.expectEqual(@as(?u32, 41), gate.moves_when_held);
    try testing.expectEqual(free_wait_ns, gate.free_wait_ns);
    try testing.expect(gate.free_wait_ns > for_release_ns);
    try testing.expectEqual(@as(u32, max_retakes), gate.max_retakes);
}

test "a spinner waits for a releaser that runs on until such waits run out twice in a row; then one in 16 does, until one pays off" {
    var f: FreeWaits = .{};
    try testing.expectEqual(free_wait_ns, f.next());
    f.learn(false);
    try testing.expectEqual(free_wait_ns, f.next()); // one miss: still waits
    f.learn(true);
    f.learn(false);
    try testing.expectEqual(free_wait_ns, f.next()); // a success between: the misses start again
    f.learn(false);
    var waits_in_32: u32 = 0;
    for (0..32) |_| {
        if (f.next() != 0) waits_in_32 += 1;
    }
    try testing.expectEqual(@as(u32, 32 / FreeWaits.probe_every), waits_in_32);
    f.learn(false); // a probe that ran out changes nothing
    try testing.expect(f.next() == 0 or f.probes.load(.monotonic) % FreeWaits.probe_every == 1);
    f.learn(true); // a probe that paid off: every spinner waits again
    for (0..4) |_| try testing.expectEqual(free_wait_ns, f.next());
}

test "under a GIL, a thread that finds the spinner's slot held waits a moment for it: it gets it if the spinner leaves meanwhile, else gives up then, not before" {
    defer resetForTest(.unset);
    resetForTest(.gil);
    const held = Grant.take() orelse return error.TestUnexpectedResult;
    const start = clock.monotonicNs();
    try testing.expect(Grant.take() == null);
    try testing.expect(clock.monotonicNs() - start >= slot_wait_ns);
    held.leave();
    // The spinner leaves 1 ms after the other thread began to wait for the slot (with 20 ms to wait here, so
    // that a loaded host, an emulator or one CPU leaves the spinner time to run): it gets the slot then, not
    // before.
    const Spinner = struct {
        asking: std.atomic.Value(bool) = .init(false),
        left_at: std.atomic.Value(u64) = .init(0),
        fn run(c: *@This(), grant: Grant) void {
            while (!c.asking.load(.acquire)) std.atomic.spinLoopHint();
            sleepNs(std.time.ns_per_ms);
            c.left_at.store(clock.monotonicNs(), .release);
            grant.leave();
        }
    };
    var c: Spinner = .{};
    const grant = Grant.take() orelse return error.TestUnexpectedResult;
    const t = try std.Thread.spawn(.{}, Spinner.run, .{ &c, grant });
    c.asking.store(true, .release);
    const mine = Grant.getWithin(true, 20 * std.time.ns_per_ms);
    const got_at = clock.monotonicNs();
    t.join();
    const g = mine orelse return error.TestUnexpectedResult;
    try testing.expect(got_at >= c.left_at.load(.acquire));
    g.leave();
    try testing.expect(!slot.load(.monotonic));
}

test "a fork resets the hand-over's counts in the child by itself: the slot, threads starting, sleepers apart" {
    if (@import("builtin").os.tag == .windows) return error.SkipZigTest;
    defer resetForTest(.unset);
    const fork = @import("fork.zig");
    try fork.install();
    resetForTest(.gil);
    const held = Grant.take() orelse return error.TestUnexpectedResult; // the GIL spinner's slot, held
    defer held.leave();
    threadStarting();
    defer threadEntered();
    // A start that never expires (a real one is ignored after `starting_for_ns`: under a sanitizer or an
    // emulator, fork and the child's start may take that long, and the child would pass without the reset).
    started_at_ns.store(std.math.maxInt(u64), .monotonic);
    defer started_at_ns.store(0, .monotonic);
    _ = barged_sleepers.fetchAdd(1, .monotonic);
    defer _ = barged_sleepers.fetchSub(1, .monotonic);
    try testing.expect(Grant.take() == null);
    const Child = struct {
        fn check() bool {
            // No reset called here: the handler ran inside fork().
            if (barged_sleepers.load(.monotonic) != 0) return false;
            const grant = Grant.take() orelse return false;
            grant.leave();
            return true;
        }
    };
    try testing.expect(try fork.checkInChild(Child.check));
    try testing.expect(Grant.take() == null); // the parent's are real
}

test "spinUntil polls until done, gives up at its limit and not before, and does not poll when it may not spin" {
    defer resetForTest(.unset);
    const Poll = struct {
        calls: u32 = 0,
        done_after: u32,
        fn done(self: *@This()) bool {
            self.calls += 1;
            return self.calls >= self.done_after;
        }
    };
    for ([_]Mode{ .gil, .without_gil }) |m| {
        resetForTest(m);
        // Done at the 10th poll: before the pacer first reads the clock (at its 16th), so however slow.
        var soon: Poll = .{ .done_after = 10 };
        try testing.expect(spinUntil(Poll.done, &soon));
        try testing.expectEqual(@as(u32, 10), soon.calls);
        var never: Poll = .{ .done_after = std.math.maxInt(u32) };
        const start = clock.monotonicNs();
        try testing.expect(!spinUntil(Poll.done, &never));
        try testing.expect(clock.monotonicNs() - start >= for_release_ns);
        try testing.expect(!slot.load(.monotonic)); // the GIL spinner's slot is given back
        threadStarting();
        var while_starting: Poll = .{ .done_after = 1 };
        try testing.expect(!spinUntil(Poll.done, &while_starting));
        try testing.expectEqual(@as(u32, 0), while_starting.calls);
        threadEntered();
    }
    resetForTest(.gil);
    slot.store(true, .monotonic); // another thread spins
    var busy: Poll = .{ .done_after = 1 };
    try testing.expect(!spinUntil(Poll.done, &busy));
    try testing.expectEqual(@as(u32, 0), busy.calls);
    resetForTest(.off);
    var off: Poll = .{ .done_after = 1 };
    try testing.expect(!spinUntil(Poll.done, &off));
    try testing.expectEqual(@as(u32, 0), off.calls);
}

test "acquire in every mode and while a thread starts: times out at its deadline, not before, and takes a lock another thread releases" {
    defer resetForTest(.unset);
    const Releaser = struct {
        fn run(lock: *Lock) void {
            sleepNs(2 * std.time.ns_per_ms);
            lock.release() catch unreachable;
        }
    };
    for ([_]Mode{ .off, .gil, .without_gil }) |m| {
        for ([_]bool{ false, true }) |a_thread_starts| {
            resetForTest(m);
            if (a_thread_starts) threadStarting();
            var lock: Lock = .{};
            try testing.expect(lock.tryAcquire());
            const waits_before = waits.load(.monotonic);
            const yields_before = spin.Pacer.yields_in_tests.load(.monotonic);
            var since: u64 = 0;
            const deadline: clock.Deadline = .fromTimeout(std.time.ns_per_ms);
            try testing.expectEqual(Lock.AcquireResult.timed_out, acquire(&lock, deadline, &since, waitsNow()));
            try testing.expect(clock.monotonicNs() >= deadline.ns);
            // A waiter counts itself as beginning to wait whenever it may spin (a spinner's cue).
            try testing.expectEqual(m != .off, waits.load(.monotonic) != waits_before);
            // Without a GIL a spinner yields its CPU from its first clock read: while a thread starts, none spun.
            if (a_thread_starts) try testing.expectEqual(yields_before, spin.Pacer.yields_in_tests.load(.monotonic));
            const t = try std.Thread.spawn(.{}, Releaser.run, .{&lock});
            since = 0;
            const result = acquire(&lock, .forever, &since, waitsNow());
            t.join();
            try testing.expectEqual(Lock.AcquireResult.acquired, result);
            try testing.expect(lock.isLocked());
            try testing.expect(!slot.load(.monotonic));
        }
    }
}

test "under a GIL, a thread whose release left its lock to a starving waiter sleeps apart at once when it wants it back" {
    defer resetForTest(.unset);
    resetForTest(.gil);
    const Ctx = struct {
        lock: Lock = .{},
        done: [2]std.atomic.Value(bool) = .{ .init(false), .init(false) },

        /// Static: a check that fails leaves its threads running on it, not on a returned stack frame.
        var shared: @This() = .{};

        /// A wait begun long enough ago to be past its fairness mark: it registers as starving at once.
        fn starving(c: *@This()) void {
            var since = clock.monotonicNs() -| 2 * Lock.fairAfterNs();
            _ = c.lock.acquireBargeable(.forever, &since, barged, true);
            c.done[0].store(true, .release);
        }
        /// Releases the lock (to the starving waiter) and at once wants it back, its fairness mark a minute
        /// away: only a release, a bump or the lock seen free ends its sleep.
        fn wantsItBack(c: *@This()) void {
            c.lock.release() catch unreachable;
            var since = clock.monotonicNs() + 60 * std.time.ns_per_s;
            _ = acquire(&c.lock, .forever, &since, waitsNow());
            c.done[1].store(true, .release);
        }
        const until = @import("lock.zig").waitUntilWithin;
        fn leftToStarving(c: *@This()) bool {
            return c.lock.isContended(); // the starving count (nobody sleeps on the lock word)
        }
        fn apart(_: *@This()) bool {
            return barged_sleepers.load(.monotonic) == 1;
        }
        fn starvingGotIt(c: *@This()) bool {
            return c.done[0].load(.acquire);
        }
        fn bothDone(c: *@This()) bool {
            return c.done[0].load(.acquire) and c.done[1].load(.acquire);
        }
    };
    // The note is good for the fairness mark (`Lock.fairAfterNs`): a thread descheduled that long between its release and its
    // wait parks on the lock word instead, and the attempt shows nothing (then another runs).
    var shown = false;
    var attempt: u32 = 0;
    while (!shown and attempt < 5) : (attempt += 1) {
        const c = &Ctx.shared;
        c.* = .{};
        try testing.expect(c.lock.tryAcquire()); // held for the thread that will release it
        const first = try std.Thread.spawn(.{}, Ctx.starving, .{c});
        try Ctx.until(c, Ctx.leftToStarving, 10 * std.time.ns_per_s);
        const second = try std.Thread.spawn(.{}, Ctx.wantsItBack, .{c});
        try Ctx.until(c, Ctx.starvingGotIt, 10 * std.time.ns_per_s);
        // Held by the starving waiter now: this thread's own releases left it to nobody, so no note here.
        try testing.expect(!c.lock.leftByThisThread());
        // The thread that left it sleeps apart, not on the lock word (there, with its mark a minute away,
        // it would not count here).
        shown = if (Ctx.until(c, Ctx.apart, 2 * std.time.ns_per_s)) true else |_| false;
        // Let it go: the lock released again, a bump wakes it (a release, if it sleeps on the lock word).
        try c.lock.release();
        threadLeftPython();
        try Ctx.until(c, Ctx.bothDone, 10 * std.time.ns_per_s);
        first.join();
        second.join();
        try c.lock.release();
    }
    try testing.expect(shown);
}
