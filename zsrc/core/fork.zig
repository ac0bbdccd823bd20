//! A forked child has only the thread that forked: process-wide state that counts other threads is stale
//! there (starving waiters counted in lock words, the GIL spinner's slot, threads being started, sleepers
//! apart). The core resets it itself, once per fork, from the C library's `pthread_atfork` child handler,
//! which runs inside `fork()` in the child before anything else runs there, whoever forked: `os.fork` in
//! any interpreter, whether or not that interpreter imported zthread, or native code. (A hook given to
//! Python's `os.register_at_fork` runs only for `os.fork`, and only in the interpreter that registered it.)
//! Windows has no fork.
const std = @import("std");
const builtin = @import("builtin");
const Lock = @import("lock.zig").Lock;
const handover = @import("handover.zig");

var installed = std.atomic.Value(bool).init(false);

pub const InstallError = error{OutOfMemory};

/// Installs the child handler, once per process; later calls do nothing. Fails only if the C library
/// cannot record it (ENOMEM); a later call then tries again.
pub fn install() InstallError!void {
    if (builtin.os.tag == .windows) return;
    if (installed.load(.acquire) or installed.swap(true, .acq_rel)) return;
    if (pthread_atfork(null, null, &inChild) != 0) {
        installed.store(false, .release);
        return error.OutOfMemory;
    }
}

fn inChild() callconv(.c) void {
    Lock.afterForkInChild(); // the starving waiters counted in locks are parent threads
    handover.afterForkInChild(); // so is a spinner that held the slot, or a thread being started
}

const Handler = ?*const fn () callconv(.c) void;
extern "c" fn pthread_atfork(prepare: Handler, parent: Handler, child: Handler) c_int;

/// For tests: forks, runs `check` in the child, and returns whether it returned true there (the child
/// exits at once after it, running nothing else).
pub fn checkInChild(comptime check: fn () bool) !bool {
    const pid = fork();
    if (pid < 0) return error.ForkFailed;
    if (pid == 0) _exit(if (check()) 0 else 1);
    var status: c_int = 0;
    while (waitpid(pid, &status, 0) != pid) {}
    return status & 0x7f == 0 and (status >> 8) & 0xff == 0; // exited (not killed), with status 0
}

extern "c" fn fork() c_int;
extern "c" fn waitpid(pid: c_int, status: *c_int, options: c_int) c_int;
extern "c" fn _exit(code: c_int) noreturn;
