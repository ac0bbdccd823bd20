//! A binary semaphore: the lock behind `_thread.lock`. Any thread may release it, not only the one that
//! acquired it. The uncontended acquire is one compare-and-swap and the uncontended release another
//! (Drepper, "Futexes Are Tricky", mutex 2, with a bound on barging: docs/DESIGN.md, "The lock word").
//!
//! Barging (a releasing thread that takes the lock straight back, ahead of the waiter it just woke) is what
//! makes a lock fast, and what can starve a waiter: under the GIL the releaser runs on for a whole switch
//! interval. So a waiter that has waited to its fairness mark (`fairAfterNs`: 1 ms, as CPython's PyMutex and Go's
//! sync.Mutex, unless the layer above sets another for the process)
//! registers as *starving* in the lock word; while any thread is registered, a release leaves the lock to the
//! starving threads only (neither the releaser nor a newcomer can take it) and wakes them on `handoffs`.
const std = @import("std");
const clock = @import("clock.zig");
const futex = @import("futex.zig");
const spin = @import("spin.zig");

pub const Lock = extern struct {
    /// `locked_bit | parked_bit | starving * one_starving | generation << generation_shift`.
    state: std.atomic.Value(u32) = .init(0),
    /// Bumped by every release that leaves the lock to starving waiters, who sleep on this word.
    handoffs: std.atomic.Value(u32) = .init(0),

    /// The bits of `state`. 0 is free with nobody waiting: the only state the fast paths touch.
    /// Held (by whoever acquired it; a binary semaphore has no owner).
    const locked_bit: u32 = 1;
    /// Threads may be asleep on `state`: the release that finds no starving waiter must wake one.
    const parked_bit: u32 = 2;
    /// Bits 2-23 count the starving waiters (asleep on `handoffs`, or about to be). While the count is
    /// live and non-zero only they may take the lock, so `state` is never 0 and every fast-path
    /// compare-and-swap fails.
    const one_starving: u32 = 4;
    const count_mask: u32 = 0x00ff_fffc;
    /// Threads parked on the lock, or starving waiters (live or stale): a contended lock, not a hand-over.
    const contended_mask: u32 = count_mask | parked_bit;
    /// Bits 24-31: the fork generation (`fork_generation`'s low byte) the count was made in. After a fork
    /// the child has none of the threads that registered: a count of another generation is stale, read as
    /// 0, and the next waiter or release that writes the word clears it.
    const generation_shift = 24;

    /// How long a waiter waits before it stops yielding to barging threads (its fairness mark), unless
    /// the layer above says otherwise for the process (`setFairAfter`): 1 ms, as CPython's PyMutex and Go's
    /// sync.Mutex.
    pub const default_fair_after_ns: u64 = std.time.ns_per_ms;
    var fair_after_ns = std.atomic.Value(u64).init(default_fair_after_ns);

    /// The fairness mark in effect.
    pub fn fairAfterNs() u64 {
        return fair_after_ns.load(.monotonic);
    }

    /// Sets the fairness mark for the process (the CPython layer: once, at the first import, by the
    /// interpreter it runs in; docs/DESIGN.md, "The fairness mark per CPython"). A wait under way keeps
    /// the mark it began with.
    pub fn setFairAfter(ns: u64) void {
        fair_after_ns.store(ns, .monotonic);
    }

    /// How often a waiter re-reads the word before it parks: a holder that runs briefly on another core
    /// often releases within this window, and a wake-up through the kernel costs far more.
    const spin_limit = 64;
    pub const AcquireResult = enum { acquired, timed_out, interrupted };

    /// Bumped in a forked child (`afterForkInChild`): counts of starving waiters from before are stale.
    var fork_generation: std.atomic.Value(u32) = .init(0);

    /// Call in a forked child, before any lock is used there.
    pub fn afterForkInChild() void {
        _ = fork_generation.fetchAdd(1, .monotonic);
        // They were parent threads. (Only the forking thread runs in the child, and it is in `fork()`, not
        // counted: a thread counted now would wrap its bucket when it uncounts itself.)
        for (&sleeper_buckets) |*b| b.* = .{};
    }

    fn generationNow() u32 {
        return (fork_generation.load(.monotonic) & 0xff) << generation_shift;
    }

    /// The threads asleep on locks' `state` words, counted per bucket of lock addresses (the lock word has
    /// no room, and a lock object stays as small as CPython's): `sleepers_one` per sleeper in the low half.
    /// A bucket counts the sleepers of all its locks, so it never says fewer than a lock has: the decisions
    /// it feeds are the safe ones when it says more (a timer armed, `parked_bit` set). A thread sleeps
    /// without a fairness timer only when its bucket counts no sleeper at all (`park`), so a bucket has at
    /// most one such sleeper: the high half is its lock's `tag` (0: none), which makes the wake-ups it asks
    /// for (`wakeUntimed`) reach that lock only. docs/DESIGN.md, "The lock word".
    const Sleepers = extern struct {
        word: std.atomic.Value(u64) align(std.atomic.cache_line) = .init(0),
        /// The bucket's locks' waiters asleep apart (`sleepBarged`), of any `BargedWait`.
        apart: std.atomic.Value(u32) = .init(0),
        /// Those of them that found no free slot in `apart_due`: while there are any, a bump wakes them all.
        apart_unslotted: std.atomic.Value(u32) = .init(0),
        /// The `tag` of the one lock all of those sleep on, `mixed_locks` if they sleep on several, 0 if
        /// none sleeps, or when a sleeper came as the last left (set before they count themselves, reset
        /// when the last leaves). That reset may also erase what a sleeper of another lock wrote as it came,
        /// and a sleeper of this bucket's lock may then write its own tag: `BargedWait.bump` then wakes
        /// without need, or leaves the other lock's sleeper to its own fairness mark (a delay, never a
        /// wake-up that correctness needs: every sleeper apart has its timer).
        apart_lock: std.atomic.Value(u64) = .init(0),
        /// The fairness marks of those sleepers, one per slot (maxInt: a free slot). Each claims a slot
        /// before it counts itself and frees it as soon as it wakes, so every mark here is a sleeper's that
        /// may still be asleep. (A single earliest mark, reset only when the last sleeper left, was most
        /// often a mark long gone while sleepers overlapped, as the 4 threads of the fairness workload do:
        /// 40 % of its bumps then woke every sleeper apart, for nothing.)
        apart_due: [apart_slots]std.atomic.Value(u64) = @splat(.init(std.math.maxInt(u64))),

        /// As many as fit in the bucket (`std.atomic.cache_line` bytes: 128 on x86-64 and aarch64, so 13)
        /// after the 24 bytes above.
        const apart_slots = @max(1, (std.atomic.cache_line -| 24) / 8);

        /// Claims a free slot for the mark `due`; null if none is free.
        fn claimDue(bucket: *Sleepers, due: u64) ?*std.atomic.Value(u64) {
            for (&bucket.apart_due) |*slot| {
                if (slot.load(.monotonic) == std.math.maxInt(u64) and
                    slot.cmpxchgStrong(std.math.maxInt(u64), due, .seq_cst, .monotonic) == null) return slot;
            }
            return null;
        }

        /// Whether a sleeper apart here may be past its fairness mark at `now`: a slot's mark is, or a
        /// sleeper found no slot.
        fn apartDue(bucket: *const Sleepers, now: u64) bool {
            if (bucket.apart_unslotted.load(.seq_cst) != 0) return true;
            for (&bucket.apart_due) |*slot| if (slot.load(.seq_cst) <= now) return true;
            return false;
        }
    };
    const sleepers_one: u64 = 1;
    /// `Sleepers.apart_lock` of a bucket whose sleepers apart wait for more than one lock (never a `tag`).
    const mixed_locks: u64 = 1;
    var sleeper_buckets: [64]Sleepers = @splat(.{});

    fn bucketOf(self: *const Lock) *Sleepers {
        const h = (@intFromPtr(self) >> 3) *% 0x9e37_79b9_7f4a_7c15;
        return &sleeper_buckets[h >> (64 - 6)];
    }

    fn sleepersOf(self: *const Lock) *std.atomic.Value(u64) {
        return &self.bucketOf().word;
    }

    /// Non-zero, and different for two locks less than 16 GiB apart (they are 4-aligned and 8 bytes long).
    fn tag(self: *const Lock) u64 {
        return @as(u64, @as(u32, @truncate(@intFromPtr(self) >> 2)) | 1) << 32;
    }

    fn asleepIn(counts: u64) u32 {
        return @truncate(counts);
    }

    /// Whether the bucket's timer-less sleeper (if any) sleeps on this lock.
    fn untimedHere(self: *const Lock, counts: u64) bool {
        return counts & ~@as(u64, 0xffff_ffff) == self.tag();
    }

    /// Wakes the lock's sleepers on `state` if its bucket's timer-less sleeper (`counts` read from the bucket)
    /// sleeps on this lock: they sleep again, with the fairness timer (`park`).
    fn wakeUntimed(self: *Lock, counts: u64) void {
        if (self.untimedHere(counts)) futex.wake(&self.state, std.math.maxInt(u32));
    }

    /// Whether a thread may be asleep on this lock's `state` (for a taker that may have consumed its wake-up).
    fn othersAsleep(self: *const Lock) bool {
        return asleepIn(self.sleepersOf().load(.seq_cst)) != 0;
    }

    /// How many starving waiters `s` counts, if they are of this generation (else 0: stale).
    fn liveStarving(s: u32, generation: u32) u32 {
        const count = (s & count_mask) / one_starving;
        return if (count != 0 and s & ~@as(u32, (1 << generation_shift) - 1) == generation) count else 0;
    }

    pub fn tryAcquire(self: *Lock) bool {
        return self.state.cmpxchgStrong(0, locked_bit, .acquire, .monotonic) == null;
    }

    /// `tryAcquire` for a caller that does not wait when it fails (`acquire(False)`, a zero timeout), and so
    /// often meets a held lock (`threading.Condition` asks `acquire(False)` of its held lock in every
    /// `notify`, for a `Lock`, on every version): it reads the word first, and a held lock costs a load, not a locked
    /// compare-and-swap (about 20 cycles on x86-64 even when it fails, and the cache line taken exclusive
    /// from the holder's CPU). A free lock costs the load more: the caller that expects it free uses `tryAcquire`.
    pub fn tryAcquireIfFree(self: *Lock) bool {
        return self.state.load(.monotonic) == 0 and self.tryAcquire();
    }

    /// When a spinner (`spinAcquire`) may take a lock it saw held and then free. A lock free at its first
    /// look it takes at once, unless the caller saw it held before (`moves_when_held`).
    pub const SpinGate = struct {
        /// A counter the caller's world bumps when the thread that released the lock is likely done with it
        /// (a thread began to wait for a lock). The spinner takes a freed lock once it differs from what it
        /// was when the lock was last seen held. null: take a freed lock at once.
        moves: ?*const std.atomic.Value(u32) = null,
        /// What `moves` read when the caller last saw the lock held, before the spin, if it knows (counting any
        /// bump of its own since): then a lock free at the spin's first look was freed since, and is taken by
        /// the same rule as one freed under the spinner. null: the spin's first look is the first, and a free
        /// lock is taken at once.
        moves_when_held: ?u32 = null,
        /// Or once the lock has stayed free this long: a releaser that takes it straight back does so
        /// sooner. maxInt: never by time. (Without `moves` a freed lock is taken at once: no effect.)
        settle_ns: u64 = std.math.maxInt(u64),
        /// How often the spinner may see the lock taken again after it saw it free (a thread in a loop
        /// around the lock: barging, not a hand-over) before it gives up with `.barged`. maxInt: never.
        max_retakes: u32 = std.math.maxInt(u32),
        /// How long a lock freed under the spinner keeps it spinning for `moves`, from when the spinner
        /// sees it free, past the pacer's end if need be (`spin.Pacer.extendTo`: never past its `limit_ns`);
        /// a lock taken back meanwhile ends the spin at the pacer's own end again. Under a GIL the releaser
        /// of a waiter's lock most often runs on with the GIL (a `notify`, a `Queue.get` that frees room for
        /// a producer): a spinner that takes the lock then sleeps in CPython's `take_gil`, and the kernel's
        /// wake-up when the releaser lets the GIL go costs tens of microseconds; one that takes it when the
        /// releaser has begun to wait (`moves`) finds the GIL free. Each release the spinner sees may extend
        /// the spin once more: use it with a finite `max_retakes`. 0: the pacer's end.
        free_wait_ns: u64 = 0,

        /// Whether a freed lock has stayed free `settle_ns`; `free_since` is when the spinner first saw it
        /// free after it last saw it held (null: it sees it free for the first time now).
        fn settled(gate: SpinGate, free_since: *?u64) bool {
            if (gate.settle_ns == std.math.maxInt(u64)) return false;
            return gate.settledAt(free_since, clock.monotonicNs());
        }

        fn settledAt(gate: SpinGate, free_since: *?u64, now: u64) bool {
            if (free_since.*) |since| return now -| since >= gate.settle_ns;
            free_since.* = now;
            return gate.settle_ns == 0;
        }
    };

    pub const Spun = enum {
        acquired,
        /// The clock reached the pacer's `until_ns`, or the lock turned out to be contended (other threads
        /// parked on it, or left to starving waiters).
        gave_up,
        /// The lock was taken again after it was freed `gate.max_retakes` times: its holder is in a loop
        /// around it (barging).
        barged,
    };

    /// Spins until the lock is taken, the pacer's clock limit is reached, the lock turns out to be
    /// contended, or it is seen barged (`Spun`). Never parks: for a caller that expects a release within
    /// microseconds and would rather burn them than pay a wake-up through the kernel (the CPython layer:
    /// docs/DESIGN.md, "Spinning through a hand-over"), or, past `pacer.yield_from_ns`, give its CPU to
    /// whichever thread the OS runs instead (`spin.Pacer`).
    ///
    /// `gate` says when a lock freed under the spinner is taken. A releaser that takes the lock straight back
    /// (barging, which keeps a lock fast: no thread switch, and the data the critical section touches stays
    /// in its CPU's cache) is not made to lose it to the spinner. Pass a fresh pacer (no reads yet): a lock
    /// free at the first look is taken at once (unless `gate.moves_when_held` says the caller saw it held
    /// before), and the first look is the pacer's first read.
    pub fn spinAcquire(self: *Lock, pacer: spin.Pacer, gate: SpinGate) Spun {
        var p = pacer;
        const pacer_end = pacer.until_ns; // a retaken lock's spin ends here again (`free_wait_ns`)
        var moves_when_held = gate.moves_when_held orelse if (gate.moves) |m| m.load(.monotonic) else 0;
        const first_look_takes = gate.moves_when_held == null;
        var free_since: ?u64 = null; // when the lock, last seen held, was first seen free again
        var seen_free = false; // since the spinner last saw it held
        var retakes: u32 = 0;
        while (true) {
            const s = self.state.load(.monotonic);
            if (s == 0) {
                if ((p.reads == 0 and first_look_takes) or gate.moves == null or gate.moves.?.load(.monotonic) != moves_when_held or
                    gate.settled(&free_since))
                {
                    if (self.tryAcquire()) return .acquired;
                }
                if (!seen_free and gate.free_wait_ns != 0) p.extendTo(clock.monotonicNs() +| gate.free_wait_ns);
                seen_free = true;
            } else {
                if (s & contended_mask != 0) return .gave_up;
                if (seen_free) {
                    seen_free = false;
                    retakes += 1;
                    if (retakes >= gate.max_retakes) return .barged;
                    p.until_ns = pacer_end; // taken back: its releaser runs on with it, no wait to spin for
                }
                if (gate.moves) |m| moves_when_held = m.load(.monotonic);
                free_since = null;
            }
            if (!p.pause()) return .gave_up;
        }
    }

    /// Other threads are parked on the lock, or it is left to starving waiters: a contended lock, not a
    /// hand-over between two threads.
    pub fn isContended(self: *const Lock) bool {
        return self.state.load(.monotonic) & contended_mask != 0;
    }

    /// Blocks until the lock is acquired, `deadline` passes, or a signal handler runs in this thread.
    /// A wait that ends by its deadline or a signal while the lock is free may take it: then `.acquired`.
    pub fn acquire(self: *Lock, deadline: clock.Deadline) AcquireResult {
        var since: u64 = 0;
        return self.acquireWaiting(deadline, &since);
    }

    /// `acquire` for a caller that retries after `.interrupted` (runs signal handlers, then waits on):
    /// `since` is when the wait began (0: unknown; this call sets it when it first parks, or a hand-over spin
    /// when it begins), so a signal does not restart the time after which the waiter starves. The CPython
    /// layer reads it before it lets the GIL go.
    pub fn acquireWaiting(self: *Lock, deadline: clock.Deadline, since: *u64) AcquireResult {
        if (self.tryAcquire()) return .acquired;
        return self.acquireSlow(deadline, since, .{});
    }

    /// `acquireWaiting` for a caller that has spun already (`spinAcquire`): no spin before it parks.
    pub fn acquireAfterSpin(self: *Lock, deadline: clock.Deadline, since: *u64) AcquireResult {
        if (self.tryAcquire()) return .acquired;
        return self.acquireSlow(deadline, since, .{ .spin_reads = 0 });
    }

    /// Where a waiter that has seen its lock barged sleeps instead of on the lock (`acquireBargeable`): a
    /// word that no release touches, which its owner bumps (`bump`) when the thread that barged is likely
    /// done: under a GIL, when a thread begins to wait for a lock (it has let the GIL go). Shared by all locks.
    pub const BargedWait = struct {
        word: *std.atomic.Value(u32),
        /// How many threads sleep on `word` now: a bump makes a syscall only if some do.
        sleepers: *std.atomic.Value(u32),

        /// Changes `word` and wakes its sleepers, if any. (With the sleeper's order in `sleepBarged`: it
        /// counts itself, then reads the word; this bumps the word, then reads the count. Sequentially
        /// consistent, so either the sleeper reads the bumped word, or this call sees it counted and wakes it.)
        ///
        /// `waiting_for`: the lock the bumping thread begins to wait for, if it does. It found that lock held
        /// or left to starving waiters, so its sleepers apart could not take it (if it was freed since, the
        /// bumping thread takes it itself: at its first look, or a spinner at the next bump or its spin's
        /// end; unless it has seen the lock barged, and leaves it to the barging thread until a bump or its
        /// fairness mark, as its sleepers apart do). When every sleeper
        /// counted sleeps apart on that very lock and none is past its fairness mark (its timer late: it
        /// must register now), none is woken: each wake-up would only put a thread to sleep again, two
        /// thread switches, a few per hand-over of the fairness bound. A sleeper counts itself in the
        /// shared count before its bucket (and uncounts itself in the reverse order), and this call reads
        /// them in that order: a bucket never counts a sleeper the shared count left out, except one that
        /// counts itself between the two reads, which then reads the bumped word (it was not owed this
        /// wake-up); the price of that window is that one sleeper of another lock may sleep on to its
        /// fairness mark.
        pub fn bump(self: BargedWait, waiting_for: ?*const Lock) void {
            _ = self.word.fetchAdd(1, .seq_cst);
            const sleeping = self.sleepers.load(.seq_cst);
            if (sleeping == 0) return;
            if (waiting_for) |lock| {
                const bucket = lock.bucketOf();
                if (bucket.apart.load(.seq_cst) >= sleeping and bucket.apart_lock.load(.seq_cst) == lock.tag() and
                    !bucket.apartDue(clock.monotonicNs())) return;
            }
            futex.wake(self.word, std.math.maxInt(u32));
        }
    };

    /// `acquireWaiting` for a waiter under a GIL, where only the thread that holds the GIL runs, so a lock
    /// held by a running thread is taken again right after each release (barging), and a waiter woken by
    /// those releases only finds it taken and parks again: a wake-up through the kernel per release, paid
    /// by the running thread (docs/DESIGN.md, "Under a GIL, a barged waiter sleeps apart"). A waiter that
    /// has seen the lock barged (`seen_barging`: a spin saw it, `Spun.barged`, or the caller's own release
    /// left it to starving waiters, `leftByThisThread`; or any sleep on the lock word, ended by a wake-up,
    /// its timer or the kernel's refusal, finds it not free for all) sleeps on `barged.word` instead, where
    /// no release wakes it, until its fairness mark (then it starves, and the lock is left to it), its
    /// deadline, or a bump of the word. One that comes having seen it barged (`seen_barging`) leaves a lock it
    /// finds free to the barging thread until its first sleep there ends (docs/DESIGN.md, "A barged waiter
    /// leaves a free lock to the barging thread"). It holds
    /// and owes nothing while it sleeps there: it is not counted in the lock word.
    pub fn acquireBargeable(self: *Lock, deadline: clock.Deadline, since: *u64, barged: BargedWait, seen_barging: bool) AcquireResult {
        if (seen_barging) return self.acquireSlow(deadline, since, .{ .spin_reads = 0, .barged = barged, .barging_seen = true });
        if (self.tryAcquire()) return .acquired;
        return self.acquireSlow(deadline, since, .{ .barged = barged });
    }

    /// Like `acquire`, but a signal does not end the wait (it goes on to the same deadline): for callers
    /// that cannot run signal handlers. Whether the lock was acquired. `since_ns`: when the wait began, as
    /// `acquireWaiting`'s `since` (0: unknown, taken when it first parks).
    pub fn acquireUninterrupted(self: *Lock, deadline: clock.Deadline, since_ns: u64) bool {
        var since = since_ns;
        while (true) switch (self.acquireWaiting(deadline, &since)) {
            .acquired => return true,
            .timed_out => return false,
            .interrupted => {},
        };
    }

    /// Takes the lock if it is free and no live count of starving waiters reserves it (what a waiter that
    /// is not starving may do), dropping a stale count; a waiter that has slept on `state` marks it
    /// parked, for the wake-up it may have taken from another, if another sleeps there.
    fn tryTake(self: *Lock, s: u32, set_parked: bool) ?u32 {
        const parked = (s & parked_bit) | (if (set_parked and self.othersAsleep()) parked_bit else 0);
        return self.state.cmpxchgWeak(s, locked_bit | parked, .acquire, .monotonic);
    }

    /// Takes a free lock as a registered starving waiter, leaving the count in the same CAS.
    fn takeAsStarving(self: *Lock, s: u32) ?u32 {
        return self.state.cmpxchgWeak(s, (s - one_starving) | locked_bit, .acquire, .monotonic);
    }

    fn isFreeForAll(s: u32, generation: u32) bool {
        return s & locked_bit == 0 and liveStarving(s, generation) == 0;
    }

    const SlowOptions = struct {
        /// How often the word is read before the waiter parks.
        spin_reads: u32 = spin_limit,
        /// Set: a waiter that has seen the lock barged sleeps there (`acquireBargeable`).
        barged: ?BargedWait = null,
        /// It has seen it barged already: it sleeps there first (unless the lock is free for all as it goes).
        barging_seen: bool = false,
    };

    fn acquireSlow(self: *Lock, deadline: clock.Deadline, since: *u64, options: SlowOptions) AcquireResult {
        var spins: u32 = 0;
        while (spins < options.spin_reads) : (spins += 1) {
            const now = self.state.load(.monotonic);
            if (now == 0 and self.tryAcquire()) return .acquired;
            // Reserved for starving waiters: spinning cannot win it, and takes a CPU one of them needs.
            if (now & count_mask != 0) break;
            std.atomic.spinLoopHint();
        }
        // The spin is over in microseconds: a wait that did not say when it began reads the clock only
        // when it goes on to park.
        if (since.* == 0) since.* = clock.monotonicNs();
        const fair_at = since.* +| fairAfterNs();
        const generation = generationNow();
        var slept = false; // has tried to sleep (whether or not the kernel queued it)
        // Its last sleep ended by a wake-up or a timeout (or on a system that does not say whether it
        // slept at all), so it may have taken the wake-up of another sleeper (a signal leaves by `leaveParked`). Not after a sleep
        // the word's change refused (`.changed`): the thread was never queued. A sleep attempt is made only
        // with `parked_bit` in the word, read after any earlier wake-up, so that refusal leaves nothing owed.
        var owes_wake = false;
        var contested = false;
        // Has seen the lock barged, and sleeps apart (`acquireBargeable`) from now on.
        var barged = options.barged != null and options.barging_seen;
        // Came here having seen the lock barged: it leaves a lock it finds free to the thread that barged,
        // until it has slept apart once (docs/DESIGN.md, "A barged waiter leaves a free lock to the barging
        // thread"). That first sleep compares `barged.word` with what it read here, before its first look at
        // the lock: a bump made since (the barging thread has begun to wait, and may have left the lock free)
        // ends it at once. (A bump made between the spin's end and this read is not seen: the sleep then
        // ends at the next bump or the fairness mark.)
        var leave_free_seen: ?u32 = if (barged) options.barged.?.word.load(.seq_cst) else null;
        var s = self.state.load(.monotonic);
        while (true) {
            if (isFreeForAll(s, generation) and (leave_free_seen == null or deadline.hasPassed())) {
                s = self.tryTake(s, owes_wake) orelse return .acquired;
                continue;
            }
            // No wake-up taken: a deadline already passed leaves without touching the word.
            if (!owes_wake and deadline.hasPassed()) return .timed_out;
            // Woken on `state`, and the lock was taken again before we could: barging.
            if (slept and options.barged != null) barged = true;
            if (barged) {
                // Apart, it cannot pass on a wake-up it took on `state`: it marks the lock parked first,
                // for the next sleeper there (as one that sleeps on `state` again does).
                if (owes_wake) {
                    if (s & parked_bit == 0 and self.othersAsleep()) {
                        if (self.state.cmpxchgWeak(s, s | parked_bit, .monotonic, .monotonic)) |now| {
                            s = now;
                            continue;
                        }
                        s |= parked_bit;
                    }
                    owes_wake = false;
                    continue; // the checks above again, owing nothing now
                }
                if (clock.monotonicNs() >= fair_at) return self.acquireStarving(deadline, generation);
                // It owes nothing, and holds nothing: a signal or the deadline ends its wait as it is.
                const first_seen = leave_free_seen;
                leave_free_seen = null;
                if (self.sleepBarged(options.barged.?, fair_at, deadline, generation, first_seen) == .interrupted) return .interrupted;
                s = self.state.load(.monotonic);
                continue;
            }
            // Held, or free but left to the starving: sleep until a release wakes us, the deadline, or
            // (a hint: the kernel may be late by the thread's timer slack) the moment this waiter starves
            // (`park` says when that timer is armed).
            if (s & parked_bit == 0) {
                if (self.state.cmpxchgWeak(s, s | parked_bit, .monotonic, .monotonic)) |now| {
                    s = now;
                    continue;
                }
                s |= parked_bit;
            }
            if (deadline.hasPassed()) return self.leaveParked(.timed_out, generation);
            if (slept) contested = true; // woken, and the lock was taken again before we could
            if (contested and clock.monotonicNs() >= fair_at) return self.acquireStarving(deadline, generation);
            const result = self.park(s, contested, fair_at, deadline, generation);
            slept = true;
            owes_wake = result != .changed;
            switch (result) {
                .woken, .changed => {},
                .timed_out => {}, // re-checked above (a platform's timer may end the sleep a little early)
                .interrupted => return self.leaveParked(.interrupted, generation),
            }
            s = self.state.load(.monotonic);
        }
    }

    /// Sleeps on `state` (which holds `s`, with `parked_bit`), counted in its bucket of sleepers, until a
    /// wake-up, the deadline, or, with the fairness timer, `fair_at`. The timer only once barging is
    /// possible: this waiter has lost the lock after a wake-up (`contested`), another thread sleeps there
    /// (a release wakes one sleeper, perhaps not this one), or starving waiters are counted (their releases
    /// wake nobody here). A lone waiter (a ping-pong partner, a Condition's waiter lock, a thread waiting
    /// for the one it started) sleeps without one: arming and cancelling a timer costs a VM exit or two
    /// (about 1.5 us per round trip of a ping-pong here), and a sleeper with a timer was seen to switch
    /// out 7 us later and to preempt its waker less often. Without it, a thread woken by a barging
    /// thread's release would learn that it starves only when it runs, which the scheduler may put off for
    /// a tick (wake-affine: it queues behind the running barger); the timer wakes it on its own CPU.
    ///
    /// A sleeper without a timer relies on being woken once barging becomes possible: so a thread that
    /// registers as starving (`acquireStarving`) while the bucket counts a timer-less sleeper on this lock
    /// wakes the lock's sleepers (they sleep again, with the timer). The registration changes `state`, then
    /// reads the bucket; the sleeper counts itself, then reads `state` (all sequentially consistent), and the
    /// kernel compares `state` again as it queues it: either it sees the registration and does not sleep,
    /// or the registrant sees it counted and wakes it. A thread that comes to sleep here with a timer while
    /// one sleeps without (every thread that comes after it does) wakes the lock's sleepers too, so that a
    /// wake order that is not first-come (other systems than Linux) cannot pass it over; that wake-up is
    /// lost if the timer-less sleeper is not queued yet, and then the newcomer's registration, at its own
    /// mark, wakes it.
    fn park(self: *Lock, s: u32, contested: bool, fair_at: u64, deadline: clock.Deadline, generation: u32) futex.WaitResult {
        const counts = self.sleepersOf();
        var c = counts.load(.monotonic);
        var timed: bool = undefined;
        var mine: u64 = undefined;
        while (true) {
            timed = contested or asleepIn(c) != 0 or liveStarving(s, generation) != 0;
            mine = if (timed) sleepers_one else sleepers_one + self.tag();
            c = counts.cmpxchgWeak(c, c +% mine, .seq_cst, .monotonic) orelse break;
        }
        defer _ = counts.fetchSub(mine, .seq_cst);
        if (timed) {
            self.wakeUntimed(c);
            // Past its mark already (its wait began before it first ran): it starves now, unqueued.
            if (clock.monotonicNs() >= fair_at) return .changed;
            return if (fair_at < deadline.ns)
                futex.waitLoosely(&self.state, s, .{ .ns = fair_at })
            else
                futex.wait(&self.state, s, deadline);
        }
        if (self.state.load(.seq_cst) != s) return .changed;
        return futex.wait(&self.state, s, deadline);
    }

    /// Sleeps on `barged.word` (not woken by releases) until `fair_at`, the deadline, or a bump; at once if
    /// the lock is free for all, unless the caller leaves it so (`first_seen`: the word as it read it before
    /// it looked at the lock, which the sleep compares with; a bump since ends it). Counted in
    /// `barged.sleepers` meanwhile (`BargedWait.bump` has the order: a `first_seen` read before the count
    /// only widens what counts as a bump since).
    fn sleepBarged(self: *Lock, barged: BargedWait, fair_at: u64, deadline: clock.Deadline, generation: u32, first_seen: ?u32) futex.WaitResult {
        // Its mark and lock first, then the shared count, then its bucket's (`BargedWait.bump` has the order).
        const bucket = self.bucketOf();
        const due = bucket.claimDue(fair_at);
        if (due == null) _ = bucket.apart_unslotted.fetchAdd(1, .seq_cst);
        var on = bucket.apart_lock.load(.seq_cst);
        while (on != self.tag() and on != mixed_locks) {
            on = bucket.apart_lock.cmpxchgWeak(on, if (on == 0) self.tag() else mixed_locks, .seq_cst, .seq_cst) orelse break;
        }
        _ = barged.sleepers.fetchAdd(1, .seq_cst);
        _ = bucket.apart.fetchAdd(1, .seq_cst);
        defer {
            // Awake: its mark is no longer a sleeper's.
            if (due) |slot| slot.store(std.math.maxInt(u64), .seq_cst) else _ = bucket.apart_unslotted.fetchSub(1, .seq_cst);
            if (bucket.apart.fetchSub(1, .seq_cst) == 1) bucket.apart_lock.store(0, .seq_cst);
            _ = barged.sleepers.fetchSub(1, .seq_cst);
        }
        const seen = first_seen orelse barged.word.load(.seq_cst);
        if (first_seen == null and isFreeForAll(self.state.load(.monotonic), generation)) return .changed;
        // The fairness mark is a hint (the thread's timer slack kept), the deadline a promise.
        return if (fair_at < deadline.ns)
            futex.waitLoosely(barged.word, seen, .{ .ns = fair_at })
        else
            futex.wait(barged.word, seen, deadline);
    }

    /// A parked waiter leaves by its deadline or a signal. It may have been woken by a release (which
    /// cleared `parked_bit`) at that very moment, for nobody else: so it takes the lock if it is free
    /// (a timed wait that succeeds at its deadline), or passes the wake-up on by marking the lock parked
    /// (its holder's release wakes the next sleeper), or, interrupted while the lock is free, wakes one.
    fn leaveParked(self: *Lock, why: AcquireResult, generation: u32) AcquireResult {
        var s = self.state.load(.monotonic);
        while (true) {
            if (s & locked_bit == 0) {
                if (liveStarving(s, generation) != 0) return why; // the starving waiters were woken: they take it
                if (why == .timed_out) {
                    s = self.tryTake(s, true) orelse return .acquired;
                    continue;
                }
                futex.wake(&self.state, 1);
                return why;
            }
            if (s & parked_bit != 0) return why;
            s = self.state.cmpxchgWeak(s, s | parked_bit, .monotonic, .monotonic) orelse return why;
        }
    }

    /// The slow path of a waiter that has waited to its fairness mark: it registers, then only registered
    /// waiters may take the lock until the last of them leaves.
    fn acquireStarving(self: *Lock, deadline: clock.Deadline, generation: u32) AcquireResult {
        var s = self.state.load(.monotonic);
        while (true) {
            if (isFreeForAll(s, generation)) {
                s = self.tryTake(s, true) orelse return .acquired;
                continue;
            }
            // parked_bit: this waiter slept on `state`, and the wake-up that ended its sleep may have been
            // the only one (the release cleared the bit); the next release without starving waiters wakes
            // a sleeper again. A stale count is replaced by this one. The count cannot overflow: each
            // starving thread adds one (22 bits).
            const counted = if (liveStarving(s, generation) != 0)
                s + one_starving
            else
                (s & locked_bit) | one_starving | generation;
            s = self.state.cmpxchgWeak(s, counted | parked_bit, .seq_cst, .monotonic) orelse break;
        }
        // A sleeper on `state` without a fairness timer is woken by no release now: wake it (`park`).
        self.wakeUntimed(self.sleepersOf().load(.seq_cst));
        while (true) {
            // Read `handoffs` before the state: a release that frees the lock after this read bumps it,
            // so the sleep below cannot miss it (the kernel compares the word as it queues us).
            const seen = self.handoffs.load(.acquire);
            s = self.state.load(.monotonic);
            if (s & locked_bit == 0) {
                if (self.takeAsStarving(s) == null) return .acquired;
                continue;
            }
            switch (futex.wait(&self.handoffs, seen, deadline)) {
                .woken, .changed => {},
                // Only by the deadline (a platform's timer may end the sleep a little early: wait on).
                .timed_out => if (deadline.hasPassed()) return self.leaveStarving(.timed_out),
                .interrupted => return self.leaveStarving(.interrupted),
            }
        }
    }

    /// A starving waiter leaves by its deadline or a signal. If a release left the lock free for the
    /// starving at that moment, a timed-out waiter takes it (`.acquired`); an interrupted one leaves it
    /// to the other starving waiters (all were woken), or, if it was the last, to everyone: free and no
    /// longer reserved, with a parked sleeper woken to take it. Nothing is handed to a waiter by name, so
    /// there is nothing to hand back: the lock is free or held, and the count says who may take it.
    fn leaveStarving(self: *Lock, why: AcquireResult) AcquireResult {
        var s = self.state.load(.monotonic);
        while (true) {
            if (s & locked_bit != 0) {
                s = self.state.cmpxchgWeak(s, s - one_starving, .monotonic, .monotonic) orelse return why;
                continue;
            }
            if (why == .timed_out) {
                s = self.takeAsStarving(s) orelse return .acquired;
                continue;
            }
            const left = s - one_starving;
            if (left & count_mask != 0) {
                s = self.state.cmpxchgWeak(s, left, .monotonic, .monotonic) orelse return why;
                continue;
            }
            // The last starving waiter leaves a free lock: it is everyone's again.
            s = self.state.cmpxchgWeak(s, 0, .release, .monotonic) orelse {
                if (left & parked_bit != 0) futex.wake(&self.state, 1);
                return why;
            };
        }
    }

    pub const ReleaseError = error{NotLocked};

    /// The lock's memory must stay valid until `release` returns: a waiter may take the lock, release it
    /// and free it while this call still bumps `handoffs` and wakes.
    pub fn release(self: *Lock) ReleaseError!void {
        const s = self.state.cmpxchgStrong(locked_bit, 0, .release, .monotonic) orelse return;
        return self.releaseSlow(s);
    }

    /// Not inlined into `release`, its only caller: inlined, its futex calls, clock read and thread-local made
    /// `release` a function with a stack frame and a stack-protector check, which every release, the fast ones
    /// too, then called (seen in the disassembly of the 3.15 abi3t build). Kept apart, `release` is one
    /// compare-and-swap and a tail call, inlined into its callers.
    noinline fn releaseSlow(self: *Lock, first: u32) ReleaseError!void {
        const generation = generationNow();
        var s = first;
        while (true) {
            if (s & locked_bit == 0) return error.NotLocked; // it stays as it was
            if (liveStarving(s, generation) != 0) {
                // Free, for the starving only: wake them all (they sleep on `handoffs`, not `state`);
                // the first to see it takes it, the others sleep again.
                s = self.state.cmpxchgWeak(s, s & ~locked_bit, .release, .monotonic) orelse {
                    _ = self.handoffs.fetchAdd(1, .release);
                    futex.wake(&self.handoffs, std.math.maxInt(u32));
                    left_to_starving = .{ .lock = self, .at_ns = clock.monotonicNs() };
                    return;
                };
            } else {
                s = self.state.cmpxchgWeak(s, 0, .release, .monotonic) orelse {
                    if (s & parked_bit != 0) futex.wake(&self.state, 1);
                    return;
                };
            }
        }
    }

    /// The lock this thread's last release left to starving waiters (`releaseSlow`), and when: a note for
    /// `leftByThisThread`, kept in the slow release only (the fast path stays one compare-and-swap).
    threadlocal var left_to_starving: struct { lock: ?*const Lock = null, at_ns: u64 = 0 } = .{};

    /// Whether this thread's own release left the lock to starving waiters less than `fairAfterNs()` ago
    /// (the thread wants it back at once, as the fairness workload's threads do). Forgets the note. (A lock
    /// free for all by now is left to the thread that took it after the starving waiters, as by a waiter whose
    /// spin saw it barged: until a bump or the fairness mark.)
    pub fn leftByThisThread(self: *const Lock) bool {
        const note = left_to_starving;
        if (note.lock != self) return false;
        left_to_starving = .{};
        return clock.monotonicNs() -| note.at_ns < fairAfterNs();
    }

    pub fn isLocked(self: *const Lock) bool {
        return self.state.load(.monotonic) & locked_bit != 0;
    }

    /// How many waiters are starving now (the core's tests).
    fn starvingCount(self: *const Lock) u32 {
        return liveStarving(self.state.load(.monotonic), generationNow());
    }

    /// After fork(): the threads that held or waited on the lock do not exist in the child.
    pub fn resetAfterFork(self: *Lock) void {
        self.state.store(0, .monotonic);
        self.handoffs.store(0, .monotonic);
    }
};

const testing = std.testing;

test "uncontended acquire and release" {
    var lock: Lock = .{};
    try testing.expect(!lock.isLocked());
    try testing.expect(lock.tryAcquire());
    try testing.expect(lock.isLocked());
    try testing.expect(!lock.tryAcquire());
    try testing.expect(!lock.tryAcquireIfFree());
    try testing.expectEqual(Lock.locked_bit, lock.state.load(.monotonic)); // a failed try leaves it as it was
    try lock.release();
    try testing.expect(!lock.isLocked());
    try testing.expect(lock.tryAcquireIfFree());
    try testing.expect(lock.isLocked());
    try lock.release();
    // Free but left to starving waiters: neither try takes it.
    lock.state.store(Lock.one_starving | Lock.generationNow(), .monotonic);
    try testing.expect(!lock.tryAcquireIfFree());
    try testing.expect(!lock.tryAcquire());
    lock.state.store(0, .monotonic);
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

/// Waits (a bounded while) until `cond(ctx)` holds: the tests' way to let another thread reach a state.
fn waitUntil(ctx: anytype, comptime cond: fn (@TypeOf(ctx)) bool) !void {
    return waitUntilWithin(ctx, cond, 10 * std.time.ns_per_s);
}

/// Tests (here and in `handover.zig`): polls `cond(ctx)`, yielding, until it holds or `limit_ns` passed.
pub fn waitUntilWithin(ctx: anytype, comptime cond: fn (@TypeOf(ctx)) bool, limit_ns: u64) !void {
    const give_up = clock.monotonicNs() + limit_ns;
    while (!cond(ctx)) {
        if (clock.monotonicNs() > give_up) return error.TestTimedOut;
        std.Thread.yield() catch {};
    }
}

pub fn sleepNs(ns: u64) void {
    const until = clock.monotonicNs() + ns;
    var never: std.atomic.Value(u32) = .init(0);
    while (clock.monotonicNs() < until) _ = futex.wait(&never, 0, .{ .ns = until });
}

/// Waits until a waiter has parked on `lock` (held by the caller), lets it wait past the threshold, then
/// releases the lock and takes it straight back, as a barging thread does. Whether the re-take won.
fn releaseAndBargeAfterThreshold(lock: *Lock) !bool {
    try waitUntil(lock, isParked);
    sleepNs(2 * Lock.fairAfterNs());
    try lock.release();
    return lock.tryAcquire();
}

fn isParked(lock: *Lock) bool {
    return lock.state.load(.monotonic) & Lock.parked_bit != 0;
}

test "a spin gate's settle time: counted from when the lock is first seen free, never by a clock that went back" {
    const gate: Lock.SpinGate = .{ .settle_ns = 1000 };
    var free_since: ?u64 = null;
    try testing.expect(!gate.settledAt(&free_since, 5000)); // first seen free: the time is noted
    try testing.expectEqual(@as(?u64, 5000), free_since);
    try testing.expect(!gate.settledAt(&free_since, 5999));
    try testing.expect(gate.settledAt(&free_since, 6000));
    try testing.expect(!gate.settledAt(&free_since, 4000)); // a clock read on another CPU, behind: not yet
    free_since = null; // seen held again (spinAcquire resets it): counted afresh
    try testing.expect(!gate.settledAt(&free_since, 7000));
    try testing.expect(!gate.settledAt(&free_since, 7999));
    try testing.expect(gate.settledAt(&free_since, 8000));
    // 0: at once; maxInt (the default): never, without reading the clock.
    var at_once: ?u64 = null;
    try testing.expect((Lock.SpinGate{ .settle_ns = 0 }).settledAt(&at_once, 1));
    var never: ?u64 = 0;
    try testing.expect(!(Lock.SpinGate{}).settled(&never));
}

test "a spinner that saw the lock held before its spin (`moves_when_held`) takes it free at its first look only once `moves` changed since" {
    var moves = std.atomic.Value(u32).init(7);
    var lock: Lock = .{};
    // Free at the first look, `moves` as when the caller saw it held: not taken; it gives up at its limit.
    const until = clock.monotonicNs() + std.time.ns_per_ms;
    try testing.expectEqual(Lock.Spun.gave_up, lock.spinAcquire(.{ .until_ns = until }, .{ .moves = &moves, .moves_when_held = 7 }));
    try testing.expect(clock.monotonicNs() >= until);
    try testing.expect(!lock.isLocked());
    // `moves` changed since (a thread began to wait): taken at the first look.
    try testing.expectEqual(Lock.Spun.acquired, lock.spinAcquire(.{ .until_ns = clock.monotonicNs() + std.time.ns_per_s }, .{ .moves = &moves, .moves_when_held = 6 }));
    try testing.expect(lock.isLocked());
    try lock.release();
    // Changed by another thread during the spin: taken then, not before.
    const Bumper = struct {
        fn run(m: *std.atomic.Value(u32)) void {
            sleepNs(5 * std.time.ns_per_ms);
            _ = m.fetchAdd(1, .release);
        }
    };
    const t = try std.Thread.spawn(.{}, Bumper.run, .{&moves});
    const caught = lock.spinAcquire(.{ .until_ns = clock.monotonicNs() + 60 * std.time.ns_per_s }, .{ .moves = &moves, .moves_when_held = 7 });
    const bumped = moves.load(.acquire) != 7;
    t.join();
    try testing.expectEqual(Lock.Spun.acquired, caught);
    try testing.expect(bumped);
    try lock.release();
}

test "a lock freed under a spinner keeps it spinning `free_wait_ns` for `moves`, past the pacer's end; taken back, the spin ends at the pacer's end" {
    const ms = std.time.ns_per_ms;
    // The caller saw the lock held (`moves_when_held`) and it is free at the spin's first look: freed since,
    // by a thread that may run on. The pacer's end has come already, so only the wait for `moves` spins.
    const After20Ms = struct {
        fn bump(m: *std.atomic.Value(u32)) void {
            sleepNs(20 * ms);
            _ = m.fetchAdd(1, .release);
        }
        fn retake(l: *Lock, took: *std.atomic.Value(bool)) void {
            sleepNs(20 * ms);
            took.store(l.tryAcquire(), .release);
        }
    };
    var moves = std.atomic.Value(u32).init(0);
    var lock: Lock = .{};
    // Waiting up to 60 s from when it saw the lock free: it takes the lock at the bump, 20 ms later.
    const bumper = try std.Thread.spawn(.{}, After20Ms.bump, .{&moves});
    const waited = lock.spinAcquire(.{ .until_ns = clock.monotonicNs() }, .{ .moves = &moves, .moves_when_held = 0, .max_retakes = 2, .free_wait_ns = 60 * std.time.ns_per_s });
    const bumped = moves.load(.acquire) != 0;
    bumper.join();
    try testing.expectEqual(Lock.Spun.acquired, waited);
    try testing.expect(bumped);
    try lock.release();
    // Without it: given up at the pacer's end, the lock left free.
    try testing.expectEqual(Lock.Spun.gave_up, lock.spinAcquire(.{ .until_ns = clock.monotonicNs() }, .{ .moves = &moves, .moves_when_held = 1, .max_retakes = 2 }));
    try testing.expect(!lock.isLocked());
    // Taken back by another thread 20 ms in (its releaser runs on with it): the spin ends at the pacer's end
    // again, not 10 s after it saw the lock free.
    var took = std.atomic.Value(bool).init(false);
    const retaker = try std.Thread.spawn(.{}, After20Ms.retake, .{ &lock, &took });
    const start = clock.monotonicNs();
    const retaken = lock.spinAcquire(.{ .until_ns = start }, .{ .moves = &moves, .moves_when_held = 1, .max_retakes = 2, .free_wait_ns = 10 * std.time.ns_per_s });
    const spun_ns = clock.monotonicNs() - start;
    retaker.join();
    try testing.expectEqual(Lock.Spun.gave_up, retaken);
    try testing.expect(took.load(.acquire));
    try testing.expect(spun_ns < 5 * std.time.ns_per_s);
    try lock.release();
}

test "a spinner takes a lock free at its first look, and a lock freed under it once `moves` changed, once it stayed free `settle_ns`, or at once without a gate, yielding its CPU or not" {
    var moves = std.atomic.Value(u32).init(0);
    const gate: Lock.SpinGate = .{ .moves = &moves };
    var lock: Lock = .{};
    try testing.expectEqual(Lock.Spun.acquired, lock.spinAcquire(.{ .until_ns = clock.monotonicNs() + std.time.ns_per_s }, gate));
    try testing.expect(lock.isLocked());
    // Held throughout: it gives up at its time limit, not before.
    const until = clock.monotonicNs() + std.time.ns_per_ms;
    try testing.expectEqual(Lock.Spun.gave_up, lock.spinAcquire(.{ .until_ns = until }, gate));
    try testing.expect(clock.monotonicNs() >= until);
    // Others parked on it: contended, not a hand-over; it gives up at once (long before its limit).
    lock.state.store(Lock.locked_bit | Lock.parked_bit, .monotonic);
    const far = clock.monotonicNs() + 10 * std.time.ns_per_s;
    try testing.expectEqual(Lock.Spun.gave_up, lock.spinAcquire(.{ .until_ns = far }, gate));
    try testing.expect(clock.monotonicNs() < far);
    lock.state.store(Lock.locked_bit, .monotonic);
    // Freed while this thread spins. Should this thread first look only after the release (descheduled
    // for the releaser's 20 ms head start), it takes the lock at once, as it should: each scenario below
    // is then run again.
    const Ctx = struct {
        lock: *Lock,
        moves: *std.atomic.Value(u32),
        spinning: std.atomic.Value(bool) = .init(false),
        released_at: std.atomic.Value(u64) = .init(0),
        fn releaser(ctx: *@This()) void {
            while (!ctx.spinning.load(.acquire)) std.atomic.spinLoopHint();
            sleepNs(20 * std.time.ns_per_ms); // the spinner has long seen the lock held
            ctx.released_at.store(clock.monotonicNs(), .release);
            ctx.lock.release() catch unreachable;
            // The lock stays free: the spinner waits for `moves`, or its settle time (20 ms: a loaded host
            // may keep the spinner off its CPU for milliseconds).
            sleepNs(20 * std.time.ns_per_ms);
            _ = ctx.moves.fetchAdd(1, .release);
        }
        const Caught = struct { bumps: u32, after_release_ns: u64 };
        /// Runs one release under a spinner (this thread) of the held `lock`, which it must catch: how many
        /// times the releaser had bumped `moves` when it did, and how long after the release.
        fn freedUnderSpinner(lock_: *Lock, moves_: *std.atomic.Value(u32), gate_: Lock.SpinGate, yield_from_ns: u64) !Caught {
            var ctx: @This() = .{ .lock = lock_, .moves = moves_ };
            const moves_before = moves_.load(.monotonic);
            const t = try std.Thread.spawn(.{}, releaser, .{&ctx});
            ctx.spinning.store(true, .release);
            const caught = lock_.spinAcquire(.{ .until_ns = clock.monotonicNs() + 60 * std.time.ns_per_s, .yield_from_ns = yield_from_ns }, gate_);
            const caught_at = clock.monotonicNs();
            const bumps = moves_.load(.acquire) -% moves_before;
            t.join();
            try testing.expectEqual(Lock.Spun.acquired, caught);
            try testing.expect(lock_.isLocked());
            return .{ .bumps = bumps, .after_release_ns = caught_at -| ctx.released_at.load(.acquire) };
        }
    };
    const never = std.math.maxInt(u64); // a pacer that never yields
    // Waiting for `moves`: taken only after the releaser's bump.
    var waited_for_moves = false;
    var attempt: u32 = 0;
    while (!waited_for_moves and attempt < 5) : (attempt += 1) {
        waited_for_moves = (try Ctx.freedUnderSpinner(&lock, &moves, gate, never)).bumps != 0;
    }
    try testing.expect(waited_for_moves);
    // Waiting for `moves` or 1 ms of the lock free: taken before the bump (20 ms after the release), and
    // not before the lock was free for 1 ms.
    const settle_ns = std.time.ns_per_ms;
    var settled = false;
    attempt = 0;
    while (!settled and attempt < 5) : (attempt += 1) {
        const c = try Ctx.freedUnderSpinner(&lock, &moves, .{ .moves = &moves, .settle_ns = settle_ns }, never);
        settled = c.bumps == 0 and c.after_release_ns >= settle_ns;
    }
    try testing.expect(settled);
    // No gate: a lock freed under the spinner is taken at once, before the releaser's bump.
    var took_at_release = false;
    attempt = 0;
    while (!took_at_release and attempt < 5) : (attempt += 1) {
        took_at_release = (try Ctx.freedUnderSpinner(&lock, &moves, .{}, never)).bumps == 0;
    }
    try testing.expect(took_at_release);
    // Yielding its CPU between reads from its first clock read on (`yield_from_ns` passed): the same rules.
    // Held throughout, it gives up at its limit, not before, and it yielded (a spin without the mark, above,
    // did not).
    const yields_before = spin.Pacer.yields_in_tests.load(.monotonic);
    try testing.expectEqual(Lock.Spun.gave_up, lock.spinAcquire(.{ .until_ns = clock.monotonicNs() + std.time.ns_per_ms }, gate));
    try testing.expectEqual(yields_before, spin.Pacer.yields_in_tests.load(.monotonic));
    // 20 ms: a spinner descheduled past its limit before its first clock read would give up unyielded.
    const until_yielding = clock.monotonicNs() + 20 * std.time.ns_per_ms;
    try testing.expectEqual(Lock.Spun.gave_up, lock.spinAcquire(.{ .until_ns = until_yielding, .yield_from_ns = 0 }, .{ .moves = &moves }));
    try testing.expect(clock.monotonicNs() >= until_yielding);
    try testing.expect(spin.Pacer.yields_in_tests.load(.monotonic) > yields_before);
    settled = false;
    attempt = 0;
    while (!settled and attempt < 5) : (attempt += 1) {
        const c = try Ctx.freedUnderSpinner(&lock, &moves, .{ .moves = &moves, .settle_ns = settle_ns }, 0);
        settled = c.bumps == 0 and c.after_release_ns >= settle_ns;
    }
    try testing.expect(settled);
    took_at_release = false;
    attempt = 0;
    while (!took_at_release and attempt < 5) : (attempt += 1) {
        took_at_release = (try Ctx.freedUnderSpinner(&lock, &moves, .{}, 0)).bumps == 0;
    }
    try testing.expect(took_at_release);
    try lock.release();
}

test "a waiter that has waited past the threshold gets the lock before a barging thread" {
    const Ctx = struct {
        lock: Lock = .{},
        got: std.atomic.Value(bool) = .init(false),
        let_go: std.atomic.Value(bool) = .init(false),
        fn waiter(ctx: *@This()) void {
            std.debug.assert(ctx.lock.acquire(.forever) == .acquired);
            ctx.got.store(true, .release);
            waitUntil(ctx, letGo) catch unreachable;
            ctx.lock.release() catch unreachable;
        }
        fn starving(ctx: *@This()) bool {
            return ctx.lock.starvingCount() == 1;
        }
        fn starvingOrGot(ctx: *@This()) bool {
            return ctx.lock.starvingCount() == 1 or ctx.got.load(.acquire);
        }
        fn gotIt(ctx: *@This()) bool {
            return ctx.got.load(.acquire);
        }
        fn letGo(ctx: *@This()) bool {
            return ctx.let_go.load(.acquire);
        }
    };
    for (0..20) |_| {
        var ctx: Ctx = .{};
        try testing.expect(ctx.lock.tryAcquire());
        const t = try std.Thread.spawn(.{}, Ctx.waiter, .{&ctx});
        // The waiter parks; past its fairness mark, a release and a barging re-take wake it to find the lock
        // taken again, and it registers (or it took the lock first).
        _ = try releaseAndBargeAfterThreshold(&ctx.lock);
        try waitUntil(&ctx, Ctx.starvingOrGot);
        if (ctx.got.load(.acquire)) {
            ctx.let_go.store(true, .release);
            t.join();
            continue;
        }
        // Release and take straight back, as a barging thread does: refused, the lock is the waiter's
        // (left free for it, or already taken by it).
        try ctx.lock.release();
        try testing.expect(!ctx.lock.tryAcquire());
        try waitUntil(&ctx, Ctx.gotIt);
        try testing.expect(ctx.lock.isLocked());
        ctx.let_go.store(true, .release);
        try testing.expectEqual(Lock.AcquireResult.acquired, ctx.lock.acquire(.fromTimeout(10 * std.time.ns_per_s)));
        try ctx.lock.release();
        t.join();
        try testing.expectEqual(@as(u32, 0), ctx.lock.state.load(.monotonic) & ~Lock.parked_bit);
    }
}

test "a release from another thread goes to the starving waiter, not to the barging releaser" {
    const Ctx = struct {
        lock: Lock = .{},
        fn starving(ctx: *@This()) bool {
            return ctx.lock.starvingCount() == 1;
        }
        fn waiter(ctx: *@This()) void {
            // A timed wait starves as a blocking one does.
            std.debug.assert(ctx.lock.acquire(.fromTimeout(10 * std.time.ns_per_s)) == .acquired);
        }
    };
    var ctx: Ctx = .{};
    try testing.expect(ctx.lock.tryAcquire());
    const t = try std.Thread.spawn(.{}, Ctx.waiter, .{&ctx});
    if (try releaseAndBargeAfterThreshold(&ctx.lock)) { // the waiter wakes to find it taken, and starves
        try waitUntil(&ctx, Ctx.starving);
        // This release (by a thread that did not wait) is for the starving waiter.
        try ctx.lock.release();
        try testing.expect(!ctx.lock.tryAcquire());
    }
    // The waiter holds it once it returns, and nobody released it since.
    t.join();
    try testing.expect(ctx.lock.isLocked());
    try testing.expect(!ctx.lock.tryAcquire());
    try ctx.lock.release();
    try testing.expect(ctx.lock.tryAcquire());
    try ctx.lock.release();
}

test "a starving waiter whose deadline meets a release never strands the lock" {
    // The waiter's deadline falls around the moment the holder releases, on either side of it; whatever
    // the waiter returns, the lock must end either held by it or free for everyone.
    const Ctx = struct {
        lock: Lock = .{},
        result: Lock.AcquireResult = .interrupted,
        fn waiter(ctx: *@This(), timeout_ns: u64) void {
            ctx.result = ctx.lock.acquire(.fromTimeout(timeout_ns));
        }
    };
    var rng: std.Random.DefaultPrng = .init(0x2a);
    for (0..200) |i| {
        var ctx: Ctx = .{};
        try testing.expect(ctx.lock.tryAcquire());
        const timeout_ns = 2 * std.time.ns_per_ms;
        const t = try std.Thread.spawn(.{}, Ctx.waiter, .{ &ctx, timeout_ns });
        sleepNs(timeout_ns - 200 * std.time.ns_per_us + rng.random().uintLessThan(u64, 400 * std.time.ns_per_us));
        if (i % 2 == 0) {
            try ctx.lock.release();
        } else {
            // a barging release: release and try to take it back at once
            try ctx.lock.release();
            if (ctx.lock.tryAcquire()) try ctx.lock.release();
        }
        t.join();
        try testing.expectEqual(@as(u32, 0), ctx.lock.starvingCount());
        switch (ctx.result) {
            .acquired => try ctx.lock.release(),
            .timed_out => {},
            .interrupted => return error.TestUnexpectedResult,
        }
        // Free for everyone: the fast path takes it.
        try testing.expect(ctx.lock.tryAcquire());
        try ctx.lock.release();
    }
}

test "a starving waiter that leaves, interrupted, returns a free lock to everyone and wakes a sleeper" {
    // The interrupted exit, driven directly (a signal's timing cannot be chosen): one starving waiter
    // (this thread) and one sleeper parked on the word, the lock just freed for the starving.
    const Ctx = struct {
        lock: Lock = .{},
        fn sleeper(ctx: *@This()) void {
            std.debug.assert(ctx.lock.acquire(.forever) == .acquired);
            ctx.lock.release() catch unreachable;
        }
    };
    var ctx: Ctx = .{};
    try testing.expect(ctx.lock.tryAcquire());
    const t = try std.Thread.spawn(.{}, Ctx.sleeper, .{&ctx});
    try waitUntil(&ctx.lock, isParked);
    // Register as a starving waiter would, then free the lock: it is left to the starving only.
    _ = ctx.lock.state.fetchAdd(Lock.one_starving | Lock.generationNow(), .monotonic);
    try ctx.lock.release();
    try testing.expect(!ctx.lock.isLocked());
    try testing.expect(!ctx.lock.tryAcquire());
    try testing.expectEqual(Lock.AcquireResult.interrupted, ctx.lock.leaveStarving(.interrupted));
    t.join(); // the sleeper was woken, took the lock and released it
    try testing.expectEqual(@as(u32, 0), ctx.lock.state.load(.monotonic));
    // A timed-out one at the same moment takes the lock instead.
    _ = ctx.lock.state.fetchAdd(Lock.one_starving | Lock.generationNow(), .monotonic);
    try testing.expectEqual(Lock.AcquireResult.acquired, ctx.lock.leaveStarving(.timed_out));
    try testing.expectEqual(Lock.locked_bit, ctx.lock.state.load(.monotonic));
    try ctx.lock.release();
}

test "every thread makes progress and the lock stays exclusive with barging and starving waiters" {
    // Short critical sections taken back to back: the releaser always tries to barge. Each thread must
    // get the lock many times; starvation would leave one at a handful.
    const thread_count = 4;
    const Ctx = struct {
        lock: Lock = .{},
        inside: std.atomic.Value(u32) = .init(0),
        stop: std.atomic.Value(bool) = .init(false),
        counts: [thread_count]u64 = @splat(0),
        fn worker(ctx: *@This(), id: usize) void {
            while (!ctx.stop.load(.monotonic)) {
                const timed = ctx.counts[id] % 4 == 0;
                if (timed) {
                    if (ctx.lock.acquire(.fromTimeout(std.time.ns_per_ms)) != .acquired) continue;
                } else {
                    std.debug.assert(ctx.lock.acquire(.forever) == .acquired);
                }
                std.debug.assert(ctx.inside.fetchAdd(1, .monotonic) == 0);
                ctx.counts[id] += 1;
                var hints: u32 = 0;
                while (hints < 50) : (hints += 1) std.atomic.spinLoopHint();
                std.debug.assert(ctx.inside.fetchSub(1, .monotonic) == 1);
                ctx.lock.release() catch unreachable;
            }
        }
    };
    var ctx: Ctx = .{};
    var threads: [thread_count]std.Thread = undefined;
    for (&threads, 0..) |*t, id| t.* = try std.Thread.spawn(.{}, Ctx.worker, .{ &ctx, id });
    sleepNs(300 * std.time.ns_per_ms);
    ctx.stop.store(true, .monotonic);
    for (threads) |t| t.join();
    for (ctx.counts) |c| try testing.expect(c >= 10);
    try testing.expectEqual(@as(u32, 0), ctx.lock.state.load(.monotonic) & ~Lock.parked_bit);
}

fn untimedSleepers(lock: *Lock) u32 {
    return @intFromBool(lock.untimedHere(lock.sleepersOf().load(.monotonic)));
}

fn lonelyUntimed(lock: *Lock) bool {
    return untimedSleepers(lock) == 1;
}

fn asleepOn(lock: *Lock) u32 {
    return Lock.asleepIn(lock.sleepersOf().load(.monotonic));
}

test "a lone waiter sleeps without a timer; a second waiter that sleeps there wakes it to sleep again with one" {
    const Ctx = struct {
        lock: Lock = .{},
        /// The second waiter's fairness mark is a minute away: it sleeps, timed, and registers as starving
        /// for nothing, so only its arrival can end the first one's sleep without a timer.
        fn waiter(ctx: *@This(), since_ns: u64) void {
            var since = since_ns;
            std.debug.assert(ctx.lock.acquireWaiting(.forever, &since) == .acquired);
            ctx.lock.release() catch unreachable;
        }
        fn secondAsleepFirstTimed(lock: *Lock) bool {
            return asleepOn(lock) >= 1 and untimedSleepers(lock) == 0;
        }
    };
    var ctx: Ctx = .{};
    try testing.expect(ctx.lock.tryAcquire());
    const first = try std.Thread.spawn(.{}, Ctx.waiter, .{ &ctx, 0 });
    try waitUntil(&ctx.lock, lonelyUntimed);
    sleepNs(5 * std.time.ns_per_ms); // counted is not yet queued: a wake-up before its sleep would be lost
    const second = try std.Thread.spawn(.{}, Ctx.waiter, .{ &ctx, clock.monotonicNs() + 60 * std.time.ns_per_s });
    try waitUntil(&ctx.lock, Ctx.secondAsleepFirstTimed);
    try ctx.lock.release();
    first.join();
    second.join();
    try testing.expectEqual(@as(u32, 0), asleepOn(&ctx.lock));
    try testing.expect(ctx.lock.tryAcquire());
    try ctx.lock.release();
}

test "a waiter that takes the lock after a sleep marks it parked only if another thread sleeps there" {
    const Ctx = struct {
        lock: Lock = .{},
        fn waiter(ctx: *@This()) void {
            std.debug.assert(ctx.lock.acquire(.forever) == .acquired);
        }
        fn asleep(lock: *Lock) bool {
            return asleepOn(lock) != 0;
        }
    };
    var ctx: Ctx = .{};
    try testing.expect(ctx.lock.tryAcquire());
    const t = try std.Thread.spawn(.{}, Ctx.waiter, .{&ctx});
    try waitUntil(&ctx.lock, Ctx.asleep);
    sleepNs(5 * std.time.ns_per_ms); // queued, so that the release wakes it (a refused sleep would owe nothing)
    try ctx.lock.release();
    t.join();
    // Alone: the lock is held and unmarked, so its holder's release is the fast one (no wake-up for nobody).
    try testing.expectEqual(Lock.locked_bit, ctx.lock.state.load(.monotonic));
    try ctx.lock.release();
}

test "a waiter asleep without a fairness timer is woken when another registers as starving, and registers too" {
    // The lone waiter parks first, on a held lock nobody else waits for: no timer. Then two threads come
    // that sleep apart (as waiters under a GIL that have seen the lock barged), not on `state`, and register
    // as starving at their marks. From then on no release wakes a sleeper on `state`: the lone waiter must
    // be woken by their registering, and leave `state` to register too (its mark long past).
    const workers = 2;
    const Ctx = struct {
        fn lone(ctx: *BargedCtx) void {
            std.debug.assert(ctx.lock.acquire(.forever) == .acquired);
            ctx.lock.release() catch unreachable;
        }
        fn worker(ctx: *BargedCtx) void {
            var since: u64 = 0;
            std.debug.assert(ctx.lock.acquireBargeable(.forever, &since, ctx.barged(), true) == .acquired);
            ctx.lock.release() catch unreachable;
        }
    };
    var ctx: BargedCtx = .{};
    try testing.expect(ctx.lock.tryAcquire());
    const lone = try std.Thread.spawn(.{}, Ctx.lone, .{&ctx});
    try waitUntil(&ctx.lock, lonelyUntimed);
    sleepNs(5 * std.time.ns_per_ms); // queued by now, as a lone waiter
    var threads: [workers]std.Thread = undefined;
    for (&threads) |*t| t.* = try std.Thread.spawn(.{}, Ctx.worker, .{&ctx});
    // All three registered, nobody left on `state` (a few ms; 10 s allowed). Not an error return while the
    // threads wait: they are let go first.
    const give_up = clock.monotonicNs() + 10 * std.time.ns_per_s;
    while (!(ctx.lock.starvingCount() == workers + 1 and asleepOn(&ctx.lock) == 0) and clock.monotonicNs() < give_up) {
        std.Thread.yield() catch {};
    }
    const all_registered = ctx.lock.starvingCount() == workers + 1 and asleepOn(&ctx.lock) == 0;
    try ctx.lock.release();
    lone.join();
    for (threads) |t| t.join();
    try testing.expect(all_registered);
    try testing.expect(ctx.lock.tryAcquire());
    try ctx.lock.release();
}

test "after a fork, a count of starving waiters that registered before it is stale and cleared" {
    var lock: Lock = .{};
    try testing.expect(lock.tryAcquire());
    // A waiter of this generation registered, then the process forked: the child has no such thread.
    _ = lock.state.fetchAdd(Lock.one_starving | Lock.generationNow() | Lock.parked_bit, .monotonic);
    try testing.expectEqual(@as(u32, 1), lock.starvingCount());
    Lock.afterForkInChild();
    try testing.expectEqual(@as(u32, 0), lock.starvingCount());
    // The release frees it for everyone (not for a starving waiter that does not exist)...
    try lock.release();
    try testing.expectEqual(@as(u32, 0), lock.state.load(.monotonic));
    // ...and the fast path works again.
    try testing.expect(lock.tryAcquire());
    try lock.release();
    // A free lock with a stale count is taken by the next waiter, not left reserved.
    lock.state.store(Lock.one_starving | Lock.parked_bit, .monotonic); // generation 0, now stale
    try testing.expectEqual(Lock.AcquireResult.acquired, lock.acquire(.fromTimeout(std.time.ns_per_s)));
    try testing.expectEqual(Lock.locked_bit | Lock.parked_bit, lock.state.load(.monotonic));
    try lock.release();
    try testing.expect(lock.tryAcquire());
    try lock.release();
}

test "a fork resets the starving counts in the child by itself: a count made before it is stale there" {
    if (@import("builtin").os.tag == .windows) return error.SkipZigTest;
    const fork = @import("fork.zig");
    try fork.install();
    try fork.install(); // once per process: a second call does nothing
    const Child = struct {
        var lock: Lock = .{};
        fn check() bool {
            // No reset called here: the handler ran inside fork().
            if (lock.starvingCount() != 0) return false;
            if (lock.sleepersOf().load(.monotonic) != 0) return false; // the sleepers were parent threads
            lock.release() catch return false;
            return lock.state.load(.monotonic) == 0 and lock.tryAcquire();
        }
    };
    Child.lock = .{};
    try testing.expect(Child.lock.tryAcquire());
    // A waiter of this generation registered as starving; then the process forks.
    _ = Child.lock.state.fetchAdd(Lock.one_starving | Lock.generationNow() | Lock.parked_bit, .monotonic);
    try testing.expectEqual(@as(u32, 1), Child.lock.starvingCount());
    // And another sleeps on its word, without a timer.
    const counted = Lock.sleepers_one + Child.lock.tag();
    _ = Child.lock.sleepersOf().fetchAdd(counted, .monotonic);
    defer _ = Child.lock.sleepersOf().fetchSub(counted, .monotonic);
    try testing.expect(try fork.checkInChild(Child.check));
    // The parent's counts are live: its waiters exist here.
    try testing.expectEqual(@as(u32, 1), Child.lock.starvingCount());
    try testing.expectEqual(@as(u32, 1), untimedSleepers(&Child.lock));
}

test "a timeout that has already passed leaves the word untouched" {
    var lock: Lock = .{};
    try testing.expect(lock.tryAcquire());
    try testing.expectEqual(Lock.AcquireResult.timed_out, lock.acquire(.{ .ns = 1 }));
    try testing.expectEqual(Lock.locked_bit, lock.state.load(.monotonic));
    try lock.release();
}

/// A `Lock.BargedWait` of its own for a test, and its waiter's result.
const BargedCtx = struct {
    lock: Lock = .{},
    word: std.atomic.Value(u32) = .init(0),
    sleepers: std.atomic.Value(u32) = .init(0),
    result: Lock.AcquireResult = .interrupted,
    done: std.atomic.Value(bool) = .init(false),

    fn barged(ctx: *BargedCtx) Lock.BargedWait {
        return .{ .word = &ctx.word, .sleepers = &ctx.sleepers };
    }
    fn asleepApart(ctx: *BargedCtx) bool {
        return ctx.sleepers.load(.monotonic) == 1;
    }
    fn asleepApartOrDone(ctx: *BargedCtx) bool {
        return ctx.asleepApart() or ctx.done.load(.acquire);
    }
    /// Asleep apart and counted in its bucket of locks too (`sleepBarged` counts it in the shared count first).
    fn asleepApartInBucket(ctx: *BargedCtx) bool {
        return ctx.asleepApart() and ctx.lock.bucketOf().apart.load(.monotonic) == 1;
    }
    /// Asleep apart, or already past its fairness mark (1 ms by default) and starving: a slow observer may miss the first.
    fn apartOrStarving(ctx: *BargedCtx) bool {
        return ctx.asleepApart() or ctx.lock.starvingCount() == 1;
    }
    /// Waits for `ctx.lock` as a waiter that has seen it barged; `since`: when its wait began (0: now).
    fn waiter(ctx: *BargedCtx, timeout_ns: ?u64, since_ns: u64) void {
        var since = since_ns;
        const deadline: clock.Deadline = if (timeout_ns) |ns| .fromTimeout(ns) else .forever;
        ctx.result = ctx.lock.acquireBargeable(deadline, &since, ctx.barged(), true);
        ctx.done.store(true, .release);
    }
};

test "a waiter that has seen the lock barged sleeps apart: a release does not wake it, a bump does" {
    // A waiter woken before the release (a spurious wake-up, elsewhere than on Linux) may take the lock as it
    // is released: such a run proves nothing, and the scenario runs again; one run must show the release
    // leaving it asleep.
    var shown = false;
    var attempt: u32 = 0;
    while (!shown and attempt < 5) : (attempt += 1) {
        var ctx: BargedCtx = .{};
        try testing.expect(ctx.lock.tryAcquire());
        // Its fairness mark a minute away: only a bump, or the lock seen free as it goes to sleep, ends the sleep.
        const t = try std.Thread.spawn(.{}, BargedCtx.waiter, .{ &ctx, 30 * std.time.ns_per_s, clock.monotonicNs() + 60 * std.time.ns_per_s });
        try waitUntil(&ctx, BargedCtx.asleepApart);
        sleepNs(20 * std.time.ns_per_ms); // from counted to asleep in the kernel
        // Nothing of it is in the lock word: the release is the fast path's, and wakes nobody.
        try testing.expectEqual(Lock.locked_bit, ctx.lock.state.load(.monotonic));
        try ctx.lock.release();
        sleepNs(20 * std.time.ns_per_ms);
        // (Elsewhere than on Linux a spurious wake-up may end the sleep too: only Linux's runs count.)
        shown = @import("builtin").os.tag != .linux or !ctx.done.load(.acquire);
        ctx.barged().bump(null);
        t.join();
        try testing.expectEqual(Lock.AcquireResult.acquired, ctx.result);
        try testing.expect(ctx.lock.isLocked());
        try testing.expectEqual(@as(u32, 0), ctx.sleepers.load(.monotonic));
        try ctx.lock.release();
        try testing.expectEqual(@as(u32, 0), ctx.lock.state.load(.monotonic));
    }
    try testing.expect(shown);
}

test "a waiter that has seen the lock barged leaves a lock it finds free to the barging thread, until a bump or its mark" {
    // Under a GIL the thread that barged holds the GIL and takes the lock again within a microsecond: a
    // waiter without the GIL that took it in between would make that thread wait for it, and the two
    // then take turns through the GIL at every acquisition.
    const linux = @import("builtin").os.tag == .linux; // elsewhere a sleep may end spuriously
    {
        var ctx: BargedCtx = .{};
        // Its fairness mark a minute away: only a bump ends its sleep (or, elsewhere than on Linux, a
        // spurious wake-up, after which it takes the free lock and is done).
        const t = try std.Thread.spawn(.{}, BargedCtx.waiter, .{ &ctx, null, clock.monotonicNs() + 60 * std.time.ns_per_s });
        try waitUntil(&ctx, BargedCtx.asleepApartOrDone);
        if (linux) {
            try testing.expectEqual(@as(u32, 0), ctx.lock.state.load(.monotonic)); // free, and left so
            try testing.expect(ctx.lock.tryAcquire()); // the barging thread takes it
            try ctx.lock.release();
        }
        ctx.barged().bump(null); // that thread is done with it: the waiter takes it now
        t.join();
        try testing.expectEqual(Lock.AcquireResult.acquired, ctx.result);
        try ctx.lock.release();
        try testing.expectEqual(@as(u32, 0), ctx.lock.state.load(.monotonic));
    }
    {
        // Free all along and nobody bumps: it takes the lock at its fairness mark, not before.
        var ctx: BargedCtx = .{};
        const begun = clock.monotonicNs();
        const t = try std.Thread.spawn(.{}, BargedCtx.waiter, .{ &ctx, null, begun });
        t.join();
        try testing.expectEqual(Lock.AcquireResult.acquired, ctx.result);
        if (linux) try testing.expect(clock.monotonicNs() - begun >= Lock.fairAfterNs());
        try testing.expectEqual(@as(u32, 0), ctx.lock.starvingCount());
        try ctx.lock.release();
        try testing.expectEqual(@as(u32, 0), ctx.lock.state.load(.monotonic));
    }
    {
        // A deadline already past: it takes a lock it finds free rather than time out on it.
        var ctx: BargedCtx = .{};
        var since: u64 = 0;
        try testing.expectEqual(Lock.AcquireResult.acquired, ctx.lock.acquireBargeable(.{ .ns = 1 }, &since, ctx.barged(), true));
        try ctx.lock.release();
    }
}

test "a bump by a thread that begins to wait for the lock a sleeper apart waits for does not wake it; other bumps do" {
    var others: [256]Lock = @splat(.{});
    var shown = false;
    var attempt: u32 = 0;
    while (!shown and attempt < 5) : (attempt += 1) {
        var ctx: BargedCtx = .{};
        // Another lock of the same bucket, as a rule (none among 256: 1 in 50 runs), for the bump to wake.
        const other = for (&others) |*o| {
            if (o.bucketOf() == ctx.lock.bucketOf()) break o;
        } else &others[0];
        try testing.expect(ctx.lock.tryAcquire());
        const t = try std.Thread.spawn(.{}, BargedCtx.waiter, .{ &ctx, 30 * std.time.ns_per_s, clock.monotonicNs() + 60 * std.time.ns_per_s });
        // Counted in the shared count, then in its bucket's (a loaded host may run this thread in between).
        try waitUntil(&ctx, BargedCtx.asleepApartInBucket);
        sleepNs(20 * std.time.ns_per_ms); // from counted to asleep in the kernel
        try ctx.lock.release(); // free now, and the sleeper apart does not know
        ctx.barged().bump(&ctx.lock); // as a thread that begins to wait for it: no wake-up
        sleepNs(20 * std.time.ns_per_ms);
        // (Elsewhere than on Linux a spurious wake-up may end the sleep too: only Linux's runs count.)
        shown = @import("builtin").os.tag != .linux or !ctx.done.load(.acquire);
        ctx.barged().bump(other); // a thread that begins to wait for another lock (of its bucket): it wakes, takes it
        const bumped_at = clock.monotonicNs();
        t.join();
        // Not woken, it would have slept to its deadline, 30 s, and then taken the free lock.
        try testing.expect(clock.monotonicNs() - bumped_at < 10 * std.time.ns_per_s);
        try testing.expectEqual(Lock.AcquireResult.acquired, ctx.result);
        try testing.expectEqual(@as(u32, 0), ctx.lock.bucketOf().apart.load(.monotonic));
        try ctx.lock.release();
    }
    try testing.expect(shown);
}

test "a bump for the lock a sleeper apart waits for does not wake it after another sleeper apart there passed its mark and left" {
    // The bucket holds the mark of every sleeper apart that is still asleep, and of no other: the mark of
    // one that has left, long past, would make every such bump wake the others (a single earliest mark,
    // reset only when the last sleeper left, did).
    var shown = false;
    var attempt: u32 = 0;
    while (!shown and attempt < 5) : (attempt += 1) {
        var ctx: BargedCtx = .{};
        try testing.expect(ctx.lock.tryAcquire());
        const Early = struct {
            result: Lock.AcquireResult = .interrupted,
            fn run(early: *@This(), c: *BargedCtx, since_ns: u64) void {
                var since = since_ns;
                early.result = c.lock.acquireBargeable(.fromTimeout(30 * std.time.ns_per_s), &since, c.barged(), true);
            }
            fn asleepBoth(c: *BargedCtx) bool {
                return c.sleepers.load(.monotonic) == 2;
            }
            fn starving(c: *BargedCtx) bool {
                return c.lock.starvingCount() == 1;
            }
        };
        // One whose mark is a minute away, then one whose mark is 300 ms away: both asleep apart (a slow
        // start may see the second past its mark first: that attempt shows nothing, and runs to its end).
        const late = try std.Thread.spawn(.{}, BargedCtx.waiter, .{ &ctx, 30 * std.time.ns_per_s, clock.monotonicNs() + 60 * std.time.ns_per_s });
        try waitUntil(&ctx, BargedCtx.asleepApart);
        var early: Early = .{};
        const early_thread = try std.Thread.spawn(.{}, Early.run, .{ &early, &ctx, clock.monotonicNs() + 300 * std.time.ns_per_ms - Lock.fairAfterNs() });
        var both_apart = false;
        while (!both_apart and !Early.starving(&ctx)) {
            both_apart = Early.asleepBoth(&ctx);
            std.Thread.yield() catch {};
        }
        // The early one reaches its mark, leaves its sleep apart and starves; the release is its.
        try waitUntil(&ctx, Early.starving);
        try ctx.lock.release();
        early_thread.join();
        try testing.expectEqual(Lock.AcquireResult.acquired, early.result);
        const late_asleep = ctx.asleepApart(); // it sleeps on (unless a spurious wake-up ended it)
        try ctx.lock.release(); // free now, and the late one does not know
        ctx.barged().bump(&ctx.lock); // a thread that begins to wait for it: no wake-up, its mark is ahead
        sleepNs(20 * std.time.ns_per_ms);
        // (Elsewhere than on Linux a spurious wake-up may end the sleep too: only Linux's runs count.)
        shown = both_apart and (@import("builtin").os.tag != .linux or (late_asleep and !ctx.done.load(.acquire)));
        ctx.barged().bump(null); // any other bump wakes it, and it takes the free lock
        const bumped_at = clock.monotonicNs();
        late.join();
        try testing.expect(clock.monotonicNs() - bumped_at < 10 * std.time.ns_per_s);
        try testing.expectEqual(Lock.AcquireResult.acquired, ctx.result);
        try ctx.lock.release();
        for (&ctx.lock.bucketOf().apart_due) |*slot| try testing.expectEqual(std.math.maxInt(u64), slot.load(.monotonic));
    }
    try testing.expect(shown);
}

test "a waiter asleep apart starves at its fairness mark and gets the lock from a thread that keeps barging" {
    var ctx: BargedCtx = .{};
    try testing.expect(ctx.lock.tryAcquire());
    const t = try std.Thread.spawn(.{}, BargedCtx.waiter, .{ &ctx, null, 0 });
    try waitUntil(&ctx, BargedCtx.apartOrStarving);
    // Release and take straight back, never bumping, until a re-take is refused: the lock is the waiter's.
    const give_up = clock.monotonicNs() + 10 * std.time.ns_per_s;
    while (true) {
        try ctx.lock.release();
        if (!ctx.lock.tryAcquire()) break;
        if (clock.monotonicNs() > give_up) return error.TestTimedOut;
    }
    t.join();
    try testing.expectEqual(Lock.AcquireResult.acquired, ctx.result);
    try testing.expect(ctx.lock.isLocked());
    try testing.expectEqual(@as(u32, 0), ctx.lock.starvingCount());
    try ctx.lock.release();
    try testing.expect(ctx.lock.tryAcquire()); // free for everyone again
    try ctx.lock.release();
}

test "a waiter whose wait began before it first ran counts its fairness mark from then: past it, it starves at once" {
    // The CPython layer starts the clock before it lets the GIL go; the kernel may then run the thread
    // the GIL went to ahead of the waiter for a millisecond or more. Once it runs, a waiter past its mark
    // registers at once instead of sleeping apart (or parking) for another millisecond.
    var ctx: BargedCtx = .{};
    try testing.expect(ctx.lock.tryAcquire());
    const t = try std.Thread.spawn(.{}, BargedCtx.waiter, .{ &ctx, null, clock.monotonicNs() -| 2 * Lock.fairAfterNs() });
    const give_up = clock.monotonicNs() + 10 * std.time.ns_per_s;
    while (ctx.lock.starvingCount() != 1) {
        // Asleep apart, it would sleep until its mark: with a mark counted from now, about 1 ms.
        try testing.expectEqual(@as(u32, 0), ctx.sleepers.load(.monotonic));
        if (clock.monotonicNs() > give_up) return error.TestTimedOut;
    }
    try testing.expectEqual(@as(u32, 0), ctx.sleepers.load(.monotonic));
    // Registered: the release is its, and a barging re-take is refused.
    try ctx.lock.release();
    try testing.expect(!ctx.lock.tryAcquire());
    t.join();
    try testing.expectEqual(Lock.AcquireResult.acquired, ctx.result);
    try testing.expectEqual(@as(u32, 0), ctx.lock.starvingCount());
    try ctx.lock.release();
    try testing.expect(ctx.lock.tryAcquire()); // free for everyone again
    try ctx.lock.release();
}

test "the fairness mark is the process's (`setFairAfter`): a wait begun 2 s before sleeps apart with a 60 s mark, and starves at once with a 1 s one" {
    defer Lock.setFairAfter(Lock.default_fair_after_ns);
    Lock.setFairAfter(60 * std.time.ns_per_s);
    try testing.expectEqual(60 * std.time.ns_per_s, Lock.fairAfterNs());
    {
        var ctx: BargedCtx = .{};
        try testing.expect(ctx.lock.tryAcquire());
        const t = try std.Thread.spawn(.{}, BargedCtx.waiter, .{ &ctx, 30 * std.time.ns_per_s, clock.monotonicNs() -| 2 * std.time.ns_per_s });
        // Not past its mark: asleep apart (with the default mark it would have registered at once), not starving.
        try waitUntil(&ctx, BargedCtx.asleepApart);
        try testing.expectEqual(@as(u32, 0), ctx.lock.starvingCount());
        try ctx.lock.release();
        ctx.barged().bump(null); // wakes it to find the lock free
        t.join();
        try testing.expectEqual(Lock.AcquireResult.acquired, ctx.result);
        try ctx.lock.release();
    }
    Lock.setFairAfter(std.time.ns_per_s);
    {
        var ctx: BargedCtx = .{};
        try testing.expect(ctx.lock.tryAcquire());
        const t = try std.Thread.spawn(.{}, BargedCtx.waiter, .{ &ctx, null, clock.monotonicNs() -| 2 * std.time.ns_per_s });
        const give_up = clock.monotonicNs() + 10 * std.time.ns_per_s;
        // Past its mark: it registers, never asleep apart.
        while (ctx.lock.starvingCount() != 1) {
            try testing.expectEqual(@as(u32, 0), ctx.sleepers.load(.monotonic));
            if (clock.monotonicNs() > give_up) return error.TestTimedOut;
        }
        try ctx.lock.release();
        try testing.expect(!ctx.lock.tryAcquire()); // the release is the starving waiter's
        t.join();
        try testing.expectEqual(Lock.AcquireResult.acquired, ctx.result);
        try ctx.lock.release();
        try testing.expectEqual(@as(u32, 0), ctx.lock.state.load(.monotonic) & ~Lock.parked_bit);
    }
}

test "an uninterrupted wait that says when it began starves from then, and takes the lock from a barging holder" {
    // The CPython layer's `RLock._acquire_restore` reads the clock before it lets the GIL go; the C ABI's
    // waits pass 0 (their first park). The lock is held, marked parked, and another sleeper counted in its
    // bucket, as when another waiter sleeps on it: this waiter, 2 ms into its wait when it first looks,
    // registers as starving without sleeping for a release first.
    const Ctx = struct {
        lock: Lock = .{},
        got: std.atomic.Value(bool) = .init(false),
        since_ns: u64 = 0,
        fn waiter(ctx: *@This()) void {
            std.debug.assert(ctx.lock.acquireUninterrupted(.fromTimeout(10 * std.time.ns_per_s), ctx.since_ns));
            ctx.got.store(true, .release);
        }
    };
    {
        // Its mark a minute away: it does not starve (it would, 1 ms from now, if it ignored when it began).
        var early: Ctx = .{ .since_ns = clock.monotonicNs() + 60 * std.time.ns_per_s };
        try testing.expect(early.lock.tryAcquire());
        _ = early.lock.state.fetchOr(Lock.parked_bit, .monotonic);
        _ = early.lock.sleepersOf().fetchAdd(Lock.sleepers_one, .monotonic);
        defer _ = early.lock.sleepersOf().fetchSub(Lock.sleepers_one, .monotonic);
        const t = try std.Thread.spawn(.{}, Ctx.waiter, .{&early});
        sleepNs(20 * std.time.ns_per_ms);
        try testing.expectEqual(@as(u32, 0), early.lock.starvingCount());
        try early.lock.release(); // wakes it (or it sees the lock free): it takes it
        t.join();
        try testing.expect(early.got.load(.acquire));
        try early.lock.release();
    }
    var ctx: Ctx = .{ .since_ns = clock.monotonicNs() -| 2 * Lock.fairAfterNs() };
    try testing.expect(ctx.lock.tryAcquire());
    _ = ctx.lock.state.fetchOr(Lock.parked_bit, .monotonic);
    _ = ctx.lock.sleepersOf().fetchAdd(Lock.sleepers_one, .monotonic);
    defer _ = ctx.lock.sleepersOf().fetchSub(Lock.sleepers_one, .monotonic);
    const t = try std.Thread.spawn(.{}, Ctx.waiter, .{&ctx});
    const give_up = clock.monotonicNs() + 10 * std.time.ns_per_s;
    while (ctx.lock.starvingCount() != 1) {
        if (clock.monotonicNs() > give_up) return error.TestTimedOut;
        std.atomic.spinLoopHint();
    }
    // Registered: a release and a barging re-take are refused, the lock is the waiter's.
    try ctx.lock.release();
    try testing.expect(!ctx.lock.tryAcquire());
    t.join();
    try testing.expect(ctx.got.load(.acquire));
    try testing.expectEqual(@as(u32, 0), ctx.lock.starvingCount());
    try ctx.lock.release();
    try testing.expect(ctx.lock.tryAcquire()); // free for everyone again
    try ctx.lock.release();
}

test "a waiter asleep apart whose deadline passes returns timed_out and leaves the lock as it was" {
    var ctx: BargedCtx = .{};
    try testing.expect(ctx.lock.tryAcquire());
    // 5 ms: past its fairness mark (1 ms by default) it starves, registered in the lock word, then leaves (or, with a
    // coarse timer, leaves while still apart); either way the lock is as it was.
    const t = try std.Thread.spawn(.{}, BargedCtx.waiter, .{ &ctx, 5 * std.time.ns_per_ms, 0 });
    t.join();
    try testing.expectEqual(Lock.AcquireResult.timed_out, ctx.result);
    try testing.expectEqual(@as(u32, 0), ctx.lock.starvingCount());
    try testing.expect(ctx.lock.isLocked());
    try ctx.lock.release();
    try testing.expect(ctx.lock.tryAcquire());
    try ctx.lock.release();
    // Freed as it leaves: a timed-out waiter may take it (its deadline has passed: a legal outcome).
    ctx = .{};
    try testing.expect(ctx.lock.tryAcquire());
    const t2 = try std.Thread.spawn(.{}, BargedCtx.waiter, .{ &ctx, 3 * std.time.ns_per_ms, 0 });
    sleepNs(3 * std.time.ns_per_ms);
    try ctx.lock.release();
    t2.join();
    switch (ctx.result) {
        .acquired => try ctx.lock.release(),
        .timed_out => {},
        .interrupted => return error.TestUnexpectedResult,
    }
    try testing.expectEqual(@as(u32, 0), ctx.lock.starvingCount());
    try testing.expect(ctx.lock.tryAcquire());
    try ctx.lock.release();
}
