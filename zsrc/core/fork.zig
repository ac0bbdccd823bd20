//! A forked child has only the thread that forked: process-wide state that counts other threads is stale
//! there (starving waiters counted in lock words, the GIL spinner's slot, threads being started, sleepers
//! apart). The core resets it itself, once per fork, from the C library's `pthread_atfork` child handler,
//! which runs inside `fork()` in the child, before the program goes on there, whoever forked: `os.fork` in
//! any interpreter, whether or not that interpreter imported zthread, or native code. (A hook given to
//! Python's `os.register_at_fork` runs only for `os.fork`, and only in the interpreter that registered it.)
//! The handler only stores to atomics of the core's own: it is async-signal-safe, as a child handler of a
//! multi-threaded process must be. Windows has no fork.
const std = @import("std");
const builtin = @import("builtin");
const Lock = @import("lock.zig").Lock;
const handover = @import("handover.zig");

const State = enum(u8) { absent, installing, installed };
var state = std.atomic.Value(State).init(.absent);

pub const InstallError = error{OutOfMemory};

/// Installs the child handler, once per process; later calls do nothing. A call made while another thread
/// installs it waits for that, and fails with it. Fails only if the C library cannot record the handler
/// (ENOMEM); a later call then tries again.
pub fn install() InstallError!void {
    if (builtin.os.tag == .windows) return;
    while (true) {
        switch (state.cmpxchgStrong(.absent, .installing, .acq_rel, .acquire) orelse {
            if (std.c.pthread_atfork(null, null, &inChild) != 0) {
                state.store(.absent, .release);
                return error.OutOfMemory;
            }
            state.store(.installed, .release);
            return;
        }) {
            .installed => return,
            .installing => std.Thread.yield() catch std.atomic.spinLoopHint(),
            .absent => {}, // the other thread failed: try again
        }
    }
}

fn inChild() callconv(.c) void {
    Lock.afterForkInChild(); // the starving waiters counted in locks are parent threads
    handover.afterForkInChild(); // so is a spinner that held the slot, a thread being started, a sleeper apart
}

/// For tests: forks, runs `check` in the child, and returns whether it returned true there. The child ends
/// at once after it, running no exit handlers (on Linux by the system call itself: a sanitizer's `_exit`
/// would run its own report first).
pub fn checkInChild(comptime check: fn () bool) !bool {
    const pid = std.c.fork();
    if (pid < 0) return error.ForkFailed;
    if (pid == 0) {
        const code: u8 = if (check()) 0 else 1;
        if (builtin.os.tag == .linux) std.os.linux.exit_group(code);
        std.c._exit(code);
    }
    var status: c_int = 0;
    while (true) {
        const rc = std.c.waitpid(pid, &status, 0);
        if (rc == pid) break;
        if (std.c.errno(rc) != .INTR) return error.WaitFailed;
    }
    return status & 0x7f == 0 and (status >> 8) & 0xff == 0; // exited (not killed), with status 0
}
