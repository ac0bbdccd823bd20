//! OS threads, created with the OS API directly so zthread controls the stack size (std.Thread.spawn
//! always asks for 16 MiB and cannot ask for the platform default), and thread identities.
const std = @import("std");
const builtin = @import("builtin");

const os = builtin.os.tag;

pub const SpawnError = error{
    /// The OS refused: too many threads, no memory for the stack, or an invalid stack size.
    SystemResources,
};

/// The smallest stack `setStackSize` accepts: CPython's THREAD_STACK_MIN (0x8000).
pub const min_stack_size_bytes: usize = 0x8000;
/// Windows only: CPython's THREAD_MAX_STACKSIZE (0x10000000).
pub const max_stack_size_bytes_windows: usize = 0x1000_0000;

/// The stack a new thread gets when Python asked for none (`stack_size() == 0`): CPython's effective
/// default, and never less than 1 MiB. 0 means "the OS default", which is what CPython uses there.
/// CPython's thread_pthread.h: THREAD_STACK_SIZE 0x1000000 on macOS, 0x400000 on FreeBSD; musl's own
/// default (128 KiB) overflows on deep Python code, so use CPython 3.15's 1 MiB (gh-76488).
pub const default_stack_size_bytes: usize = if (os.isDarwin())
    0x100_0000
else if (os == .freebsd)
    0x40_0000
else if (os == .linux and builtin.abi.isMusl())
    0x10_0000
else
    0;

/// Whether `Thread.tryJoin` exists here (macOS has no such call; FreeBSD's is 13.0+ only).
pub const can_try_join = os == .linux or os == .windows;

pub const Thread = struct {
    handle: Impl.Handle,

    /// Lets the thread's resources go when it ends; nobody will join it.
    pub fn detach(self: Thread) void {
        Impl.detach(self.handle);
    }

    pub fn join(self: Thread) void {
        Impl.join(self.handle);
    }

    /// Joins the thread if it has ended (true), or false at once if it still runs: a joiner that expects
    /// the end soon may poll this rather than sleep in `join` (a wake-up through the kernel). Where
    /// `can_try_join` (Linux: `pthread_tryjoin_np`, glibc and musl; Windows: a wait of 0 ms).
    pub fn tryJoin(self: Thread) bool {
        if (!can_try_join) @compileError("tryJoin: not on this OS");
        return Impl.tryJoin(self.handle);
    }

    /// The `currentIdent()` the thread will see.
    pub fn ident(self: Thread) u64 {
        return Impl.handleIdent(self.handle);
    }
};

/// Starts `entry(ctx)` on a new OS thread with a stack of `stack_size_bytes` (0: `default_stack_size_bytes`).
pub fn spawn(comptime Ctx: type, comptime entry: fn (*Ctx) void, ctx: *Ctx, stack_size_bytes: usize) SpawnError!Thread {
    const size = if (stack_size_bytes != 0) stack_size_bytes else default_stack_size_bytes;
    return .{ .handle = try Impl.spawn(Ctx, entry, ctx, size) };
}

/// True if a thread can be created with a stack of `size_bytes` (CPython's `stack_size()` validation).
pub fn stackSizeIsValid(size_bytes: usize) bool {
    if (size_bytes < min_stack_size_bytes) return false;
    return Impl.stackSizeIsValid(size_bytes);
}

/// The value of CPython's `threading.get_ident()` for the calling thread: `pthread_self()` on POSIX.
pub inline fn currentIdent() u64 {
    return Impl.currentIdent();
}

/// The kernel's id for the calling thread. Read from the kernel every time: never cached, so it is
/// right in a forked child (std.Thread.getCurrentId caches it and is stale there).
pub fn currentNativeId() u64 {
    return Impl.currentNativeId();
}

/// The longest thread name the OS keeps, without the terminating NUL (CPython's _NAME_MAXLEN): in bytes,
/// or on Windows in UTF-16 code units (SetThreadDescription; CPython 3.14's limit there).
pub const name_max_bytes: usize = switch (os) {
    .linux, .netbsd => 15,
    .freebsd => 19,
    .windows => 32766,
    else => if (os.isDarwin()) 63 else 15,
};

/// Windows: names the calling thread (SetThreadDescription, Windows 10 1607+: looked up at run time, so
/// older Windows loads the module and reports Unsupported). `name` is UTF-16.
pub fn setCurrentNameWide(name: [:0]const u16) NameError!void {
    if (os != .windows) @compileError("Windows only");
    if (name.len > name_max_bytes) return error.NameTooLong;
    return WindowsImpl.setCurrentNameWide(name);
}

/// Windows: the calling thread's name (GetThreadDescription), UTF-16; `deinit` frees it.
pub fn currentNameWide() NameError!WideName {
    if (os != .windows) @compileError("Windows only");
    return WindowsImpl.currentNameWide();
}

pub const WideName = struct {
    ptr: [*:0]u16,

    pub fn deinit(self: WideName) void {
        _ = WindowsImpl.LocalFree(self.ptr);
    }
};

pub const NameError = error{ NameTooLong, Unsupported, Unexpected };

/// Names the calling thread at the OS level (visible in /proc/self/task/*/comm, debuggers and top).
pub fn setCurrentName(name: [:0]const u8) NameError!void {
    if (name.len > name_max_bytes) return error.NameTooLong;
    return Impl.setCurrentName(name);
}

/// The calling thread's OS name, in `buf`.
pub fn currentName(buf: *[name_max_bytes + 1]u8) NameError![:0]const u8 {
    return Impl.currentName(buf);
}

/// True in the process's initial thread (the one that ran main()), null where the OS cannot tell.
pub fn isProcessMainThread() ?bool {
    return Impl.isProcessMainThread();
}

const Impl = if (os == .linux or os.isDarwin() or os == .freebsd)
    PosixImpl
else if (os == .windows)
    WindowsImpl
else
    @compileError("zthread: no thread implementation for this OS");

const WindowsImpl = struct {
    const windows = std.os.windows;
    const Handle = windows.HANDLE;
    const INFINITE: u32 = 0xFFFF_FFFF;
    const STACK_SIZE_PARAM_IS_A_RESERVATION: c_uint = 0x0001_0000;

    extern "c" fn _beginthreadex(
        security: ?*anyopaque,
        stack_size: c_uint,
        start: *const fn (?*anyopaque) callconv(.winapi) c_uint,
        arg: ?*anyopaque,
        flags: c_uint,
        thread_id: ?*c_uint,
    ) usize;
    extern "kernel32" fn WaitForSingleObject(h: Handle, ms: u32) callconv(.winapi) u32;
    extern "kernel32" fn CloseHandle(h: Handle) callconv(.winapi) windows.BOOL;
    extern "kernel32" fn GetCurrentThreadId() callconv(.winapi) u32;
    extern "kernel32" fn GetThreadId(h: Handle) callconv(.winapi) u32;

    // https://learn.microsoft.com/en-us/cpp/c-runtime-library/reference/beginthread-beginthreadex
    // As CPython: the CRT's thread start (its per-thread state is set up), the stack size a reservation.
    fn spawn(comptime Ctx: type, comptime entry: fn (*Ctx) void, ctx: *Ctx, stack_size_bytes: usize) SpawnError!Handle {
        const Trampoline = struct {
            fn run(arg: ?*anyopaque) callconv(.winapi) c_uint {
                entry(@ptrCast(@alignCast(arg.?)));
                return 0;
            }
        };
        const size = std.math.cast(c_uint, stack_size_bytes) orelse return error.SystemResources;
        const h = _beginthreadex(null, size, Trampoline.run, ctx, STACK_SIZE_PARAM_IS_A_RESERVATION, null);
        if (h == 0) return error.SystemResources; // errno EAGAIN/EINVAL/EACCES: "can't start new thread"
        return @ptrFromInt(h);
    }

    fn detach(handle: Handle) void {
        _ = CloseHandle(handle); // the thread runs on; only our handle to it goes
    }

    fn tryJoin(handle: Handle) bool {
        if (WaitForSingleObject(handle, 0) != 0) return false; // WAIT_TIMEOUT: it runs still
        _ = CloseHandle(handle);
        return true;
    }

    fn join(handle: Handle) void {
        const rc = WaitForSingleObject(handle, INFINITE);
        std.debug.assert(rc == 0); // WAIT_OBJECT_0: anything else means a bad handle, a bug here
        _ = CloseHandle(handle);
    }

    fn stackSizeIsValid(size_bytes: usize) bool {
        return size_bytes < max_stack_size_bytes_windows;
    }

    fn handleIdent(handle: Handle) u64 {
        return GetThreadId(handle);
    }

    fn currentIdent() u64 {
        return GetCurrentThreadId();
    }

    fn currentNativeId() u64 {
        return GetCurrentThreadId();
    }

    fn setCurrentName(_: [:0]const u8) NameError!void {
        return error.Unsupported; // names are UTF-16 here: setCurrentNameWide
    }

    fn currentName(_: *[name_max_bytes + 1]u8) NameError![:0]const u8 {
        return error.Unsupported; // currentNameWide
    }

    extern "kernel32" fn GetCurrentThread() callconv(.winapi) Handle;
    extern "kernel32" fn GetModuleHandleW(name: [*:0]const u16) callconv(.winapi) ?*anyopaque;
    extern "kernel32" fn GetProcAddress(module: *anyopaque, name: [*:0]const u8) callconv(.winapi) ?*anyopaque;
    extern "kernel32" fn LocalFree(mem: ?*anyopaque) callconv(.winapi) ?*anyopaque;

    const SetDescription = *const fn (Handle, [*:0]const u16) callconv(.winapi) i32;
    const GetDescription = *const fn (Handle, *?[*:0]u16) callconv(.winapi) i32;

    /// kernel32's function `name`, or null on Windows before 10 1607. Looked up on each call: naming a
    /// thread is rare, and the lookup is a table walk.
    fn kernelFunction(comptime T: type, name: [*:0]const u8) ?T {
        const kernel32 = GetModuleHandleW(std.unicode.utf8ToUtf16LeStringLiteral("kernel32.dll")) orelse return null;
        return @ptrCast(@alignCast(GetProcAddress(kernel32, name) orelse return null));
    }

    fn setCurrentNameWide(name: [:0]const u16) NameError!void {
        const set = kernelFunction(SetDescription, "SetThreadDescription") orelse return error.Unsupported;
        if (set(GetCurrentThread(), name.ptr) < 0) return error.Unexpected; // a failed HRESULT
    }

    fn currentNameWide() NameError!WideName {
        const get = kernelFunction(GetDescription, "GetThreadDescription") orelse return error.Unsupported;
        var name: ?[*:0]u16 = null;
        if (get(GetCurrentThread(), &name) < 0) return error.Unexpected;
        return .{ .ptr = name orelse return error.Unexpected };
    }

    fn isProcessMainThread() ?bool {
        return null;
    }
};

const PosixImpl = struct {
    const c = std.c;
    const Handle = c.pthread_t;

    fn spawn(comptime Ctx: type, comptime entry: fn (*Ctx) void, ctx: *Ctx, stack_size_bytes: usize) SpawnError!Handle {
        const Trampoline = struct {
            fn run(arg: ?*anyopaque) callconv(.c) ?*anyopaque {
                entry(@ptrCast(@alignCast(arg.?)));
                return null; // return, never pthread_exit: unwinding through Python frames is unsafe (bpo-44434)
            }
        };
        // https://man7.org/linux/man-pages/man3/pthread_create.3.html
        var attr: c.pthread_attr_t = undefined;
        if (c.pthread_attr_init(&attr) != .SUCCESS) return error.SystemResources; // ENOMEM
        defer _ = c.pthread_attr_destroy(&attr);
        if (stack_size_bytes != 0) {
            // EINVAL: below PTHREAD_STACK_MIN (or not a page multiple on some systems).
            if (c.pthread_attr_setstacksize(&attr, stack_size_bytes) != .SUCCESS) return error.SystemResources;
        }
        var handle: Handle = undefined;
        return switch (c.pthread_create(&handle, &attr, Trampoline.run, ctx)) {
            .SUCCESS => handle,
            // EAGAIN: out of threads or memory; EINVAL: attr refused; EPERM: cannot happen without
            // scheduling attributes. Python reports all of them as "can't start new thread".
            else => error.SystemResources,
        };
    }

    fn detach(handle: Handle) void {
        const rc = c.pthread_detach(handle);
        // ESRCH/EINVAL: the handle is not joinable, which would be a bug in the caller.
        std.debug.assert(rc == .SUCCESS);
    }

    extern "c" fn pthread_tryjoin_np(thread: c.pthread_t, retval: ?*?*anyopaque) c.E;

    fn tryJoin(handle: Handle) bool {
        // https://man7.org/linux/man-pages/man3/pthread_tryjoin_np.3.html: EBUSY while the thread runs.
        return pthread_tryjoin_np(handle, null) == .SUCCESS;
    }

    fn join(handle: Handle) void {
        const rc = c.pthread_join(handle, null);
        // EDEADLK (joining self) and EINVAL (not joinable) are bugs in the caller.
        std.debug.assert(rc == .SUCCESS);
    }

    fn stackSizeIsValid(size_bytes: usize) bool {
        var attr: c.pthread_attr_t = undefined;
        if (c.pthread_attr_init(&attr) != .SUCCESS) return false;
        defer _ = c.pthread_attr_destroy(&attr);
        return c.pthread_attr_setstacksize(&attr, size_bytes) == .SUCCESS;
    }

    inline fn currentIdent() u64 {
        if (!tcb_self) return handleIdent(c.pthread_self());
        if (tcb_self_state.load(.monotonic) == tcb_self_same) return tcbSelf();
        return currentIdentByCall();
    }

    /// The first call in the process, which checks %fs:0 against `pthread_self()`, and every call where that is
    /// not known to hold. A function of its own: the call above is then one load, one compare and %fs:0, with no
    /// registers to save for a call (RLock's `__enter__` and `__exit__` read it every time).
    noinline fn currentIdentByCall() u64 {
        if (tcb_self_state.load(.monotonic) == tcb_self_unknown) {
            const same = tcbSelf() == handleIdent(c.pthread_self());
            tcb_self_state.store(if (same) tcb_self_same else tcb_self_differs, .monotonic);
        }
        return handleIdent(c.pthread_self());
    }

    /// x86_64 Linux (glibc and musl alike): `pthread_self()` is the thread control block's first word, its own
    /// address, at %fs:0. Read directly it costs one load; `pthread_self()` costs a call through the PLT,
    /// about 8 ns on this project's CI machine (an indirect branch, slow under the VM's mitigations), twice
    /// per RLock acquire+release. The first call in the process checks that both agree; if they ever did
    /// not (another libc), `pthread_self()` is used from then on.
    const tcb_self = os == .linux and builtin.cpu.arch == .x86_64;
    const tcb_self_unknown: u8 = 0;
    const tcb_self_same: u8 = 1;
    const tcb_self_differs: u8 = 2;
    var tcb_self_state: std.atomic.Value(u8) = .init(tcb_self_unknown);

    inline fn tcbSelf() u64 {
        return asm volatile ("movq %%fs:0, %[ret]"
            : [ret] "=r" (-> u64),
        );
    }

    fn handleIdent(handle: Handle) u64 {
        return @intFromPtr(handle);
    }

    extern "c" fn pthread_setname_np(thread: c.pthread_t, name: [*:0]const u8) c_int;
    extern "c" fn pthread_getname_np(thread: c.pthread_t, name: [*]u8, len: usize) c_int;
    extern "c" fn pthread_main_np() c_int;
    extern "c" fn getpid() c_int;

    // https://man7.org/linux/man-pages/man3/pthread_setname_np.3.html; macOS names only the calling
    // thread and takes just the name.
    fn setCurrentName(name: [:0]const u8) NameError!void {
        const rc = if (os.isDarwin())
            Darwin.pthread_setname_np(name.ptr)
        else
            pthread_setname_np(c.pthread_self(), name.ptr);
        return switch (rc) {
            0 => {},
            @backingInt(std.posix.E.RANGE) => error.NameTooLong, // longer than the OS keeps
            else => error.Unexpected,
        };
    }

    const Darwin = struct {
        extern "c" fn pthread_setname_np(name: [*:0]const u8) c_int;
    };

    fn currentName(buf: *[name_max_bytes + 1]u8) NameError![:0]const u8 {
        // ERANGE only if the buffer is shorter than the OS's limit, which it is not.
        if (pthread_getname_np(c.pthread_self(), buf, buf.len) != 0) return error.Unexpected;
        const len = std.mem.indexOfScalar(u8, buf, 0) orelse name_max_bytes;
        buf[len] = 0;
        return buf[0..len :0];
    }

    fn isProcessMainThread() ?bool {
        if (os == .linux) return std.os.linux.gettid() == getpid();
        return pthread_main_np() == 1;
    }

    extern "c" fn pthread_threadid_np(thread: ?c.pthread_t, thread_id: *u64) c_int;
    extern "c" fn pthread_getthreadid_np() c_int;

    fn currentNativeId() u64 {
        switch (os) {
            // https://man7.org/linux/man-pages/man2/gettid.2.html: never fails.
            .linux => return @intCast(std.os.linux.gettid()),
            .freebsd => return @intCast(pthread_getthreadid_np()),
            else => {
                var id: u64 = 0;
                _ = pthread_threadid_np(null, &id); // null: the calling thread; cannot fail then
                return id;
            },
        }
    }
};

const testing = std.testing;

test "a spawned thread runs with its own native id and ident" {
    const Ctx = struct {
        native_id: u64 = 0,
        ident: u64 = 0,
        fn run(ctx: *@This()) void {
            ctx.native_id = currentNativeId();
            ctx.ident = currentIdent();
        }
    };
    var ctx: Ctx = .{};
    const t = try spawn(Ctx, Ctx.run, &ctx, 0);
    const ident = t.ident();
    t.join();
    try testing.expect(ctx.native_id != 0);
    try testing.expect(ctx.native_id != currentNativeId());
    try testing.expect(ctx.ident != currentIdent());
    try testing.expectEqual(ident, ctx.ident);
}

test "tryJoin is false while the thread runs, and joins it once it has ended" {
    if (!can_try_join) return error.SkipZigTest;
    const Ctx = struct {
        go: std.atomic.Value(bool) = .init(false),
        fn run(ctx: *@This()) void {
            while (!ctx.go.load(.acquire)) std.Thread.yield() catch {};
        }
    };
    var ctx: Ctx = .{};
    const t = try spawn(Ctx, Ctx.run, &ctx, 0);
    try testing.expect(!t.tryJoin()); // it waits for `go`: it cannot have ended
    ctx.go.store(true, .release);
    // It ends soon; a hang here (a thread never seen ended) fails by the test runner's timeout. Once true,
    // the thread is joined: its handle must not be joined or detached again (a test under valgrind or
    // a debug libc would report that).
    while (!t.tryJoin()) std.Thread.yield() catch {};
}

test "a thread gets the stack size it asked for" {
    if (os != .linux or !builtin.abi.isGnu()) return error.SkipZigTest;
    const Ctx = struct {
        stack_bytes: usize = 0,
        extern "c" fn pthread_getattr_np(thread: std.c.pthread_t, attr: *std.c.pthread_attr_t) c_int;
        extern "c" fn pthread_attr_getstacksize(attr: *const std.c.pthread_attr_t, size: *usize) c_int;
        fn run(ctx: *@This()) void {
            var attr: std.c.pthread_attr_t = undefined;
            std.debug.assert(pthread_getattr_np(std.c.pthread_self(), &attr) == 0);
            std.debug.assert(pthread_attr_getstacksize(&attr, &ctx.stack_bytes) == 0);
            _ = std.c.pthread_attr_destroy(&attr);
        }
    };
    var ctx: Ctx = .{};
    const want_bytes: usize = 3 * 1024 * 1024;
    const t = try spawn(Ctx, Ctx.run, &ctx, want_bytes);
    t.join();
    try testing.expect(ctx.stack_bytes >= want_bytes);
}

test "stack sizes below the minimum are refused" {
    try testing.expect(!stackSizeIsValid(1));
    try testing.expect(!stackSizeIsValid(min_stack_size_bytes - 1));
    try testing.expect(stackSizeIsValid(1024 * 1024));
}

test "a thread's OS name can be set and read back (Windows: UTF-16)" {
    if (os != .windows) return error.SkipZigTest;
    const Ctx = struct {
        read_back: [64]u16 = undefined,
        len: usize = 0,
        err: ?NameError = null,
        fn run(ctx: *@This()) void {
            const name = std.unicode.utf8ToUtf16LeStringLiteral("zthread-test \u{e9}\u{1f600}");
            setCurrentNameWide(name) catch |e| {
                ctx.err = e;
                return;
            };
            const got = currentNameWide() catch |e| {
                ctx.err = e;
                return;
            };
            defer got.deinit();
            const slice = std.mem.span(got.ptr);
            ctx.len = @min(slice.len, ctx.read_back.len);
            @memcpy(ctx.read_back[0..ctx.len], slice[0..ctx.len]);
        }
    };
    var ctx: Ctx = .{};
    const t = try spawn(Ctx, Ctx.run, &ctx, 0);
    t.join();
    if (ctx.err) |e| return e;
    try testing.expectEqualSlices(u16, std.unicode.utf8ToUtf16LeStringLiteral("zthread-test \u{e9}\u{1f600}"), ctx.read_back[0..ctx.len]);
}

test "a thread's OS name can be set and read back" {
    if (os != .linux) return error.SkipZigTest;
    const Ctx = struct {
        read_back: [name_max_bytes + 1]u8 = undefined,
        len: usize = 0,
        fn run(ctx: *@This()) void {
            setCurrentName("zthread-test") catch unreachable;
            ctx.len = (currentName(&ctx.read_back) catch unreachable).len;
        }
    };
    var ctx: Ctx = .{};
    const t = try spawn(Ctx, Ctx.run, &ctx, 0);
    t.join();
    try testing.expectEqualStrings("zthread-test", ctx.read_back[0..ctx.len]);
    const too_long: [name_max_bytes + 1:0]u8 = @splat('x');
    try testing.expectError(error.NameTooLong, setCurrentName(&too_long));
}

test "currentIdent is pthread_self() in every thread" {
    if (os == .windows) return error.SkipZigTest;
    const Check = struct {
        fn run(ok: *bool) void {
            ok.* = currentIdent() == @intFromPtr(std.c.pthread_self()) and currentIdent() == currentIdent();
        }
    };
    var main_ok = false;
    Check.run(&main_ok);
    try testing.expect(main_ok);
    var oks: [4]bool = @splat(false);
    var threads: [4]std.Thread = undefined;
    for (&threads, &oks) |*t, *ok| t.* = try std.Thread.spawn(.{}, Check.run, .{ok});
    for (threads) |t| t.join();
    for (oks) |ok| try testing.expect(ok);
}
