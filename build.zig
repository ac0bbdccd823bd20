//! The one place that knows how to build zthread, for any target.
//!
//!   zig build                      the native module, installed as zig-out/lib/<name> (see -Dext-name)
//!   zig build test                 the core's tests (no Python needed); -Dtest-runner=... for emulators
//!   zig build test-build           compile and link the core's tests only (targets that cannot run here)
//!   zig build test -Dtsan          the core's tests under ThreadSanitizer
//!   zig build -Dtarget=aarch64-linux-gnu.2.17 ...   cross builds: always for the target's baseline CPU
const std = @import("std");

/// The CPython ABIs zthread builds for (build_options.abi in zsrc/py/abi.zig).
pub const Abi = enum { abi3, cp313t, cp314t, abi3t };

pub fn build(b: *std.Build) void {
    // A wheel must run on every CPU of its platform: default to the baseline model, never the host's.
    const target = b.standardTargetOptions(.{ .default_target = .{ .cpu_model = .baseline } });
    const optimize = b.standardOptimizeOption(.{});
    const os = target.result.os.tag;
    // -Dabi: which CPython ABI the module is built for (zsrc/py/abi.zig declares each): abi3, the stable ABI of
    // every CPython from 3.10 with the GIL; cp313t / cp314t, free-threaded CPython 3.13's / 3.14's own; abi3t, the
    // stable ABI of 3.15 and later, with and without the GIL (PEP 803).
    const abi = b.option(Abi, "abi", "CPython ABI: abi3 (3.10+ with the GIL, default), cp313t or cp314t (free-threaded 3.13, 3.14), abi3t (3.15+)") orelse .abi3;
    const default_ext_name = if (os == .windows) "_zthread.pyd" else switch (abi) {
        .abi3 => "_zthread.abi3.so",
        .cp313t, .cp314t => "_zthread.so",
        .abi3t => "_zthread.abi3t.so",
    };
    const ext_name = b.option([]const u8, "ext-name", "File name of the built extension module") orelse default_ext_name;

    // -Dtsan-module: the module (and the core under it) instrumented for ThreadSanitizer, to be loaded by a
    // CPython built with --with-thread-sanitizer, whose TSan runtime it uses (tools/tsan.py); never for a release.
    const tsan_module = b.option(bool, "tsan-module", "Instrument the module for ThreadSanitizer (for a TSan-built CPython)") orelse false;
    const core = b.createModule(.{
        .root_source_file = b.path("zsrc/core/root.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .sanitize_thread = tsan_module,
    });

    // -Dref-calls: count references through Py_IncRef/Py_DecRef instead of inline adds, so that a CPython debug
    // build's sys.gettotalrefcount() sees every one (tools/refcount-debug.py); never for a release.
    const options = b.addOptions();
    options.addOption(Abi, "abi", abi);
    options.addOption(bool, "ref_calls", b.option(bool, "ref-calls", "Py_IncRef/Py_DecRef calls for every reference (CPython debug builds)") orelse false);
    const ext_mod = b.createModule(.{
        .root_source_file = b.path("zsrc/py/module.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .pic = true,
        .strip = if (b.option(bool, "strip", "Strip the module (default: unless Debug or -Dtsan-module)")) |s| s else optimize != .debug and !tsan_module,
        .sanitize_thread = tsan_module,
        .imports = &.{
            .{ .name = "core", .module = core },
            .{ .name = "build_options", .module = options.createModule() },
        },
    });
    if (os == .windows) {
        // Py* symbols come from python3.dll (abi3), python313t.dll (cp313t), python314t.dll (cp314t) or python3t.dll
        // (abi3t, which 3.15's installs ship with and without the GIL):
        // link an import library made from the .def that lists exactly what zsrc/py/abi.zig declares for that ABI
        // (one list for both free-threaded versions), naming the DLL.
        const machine = switch (target.result.cpu.arch) {
            .x86_64 => "i386:x86-64",
            .aarch64 => "arm64",
            else => @panic("zthread: no Windows import library for this architecture"),
        };
        const dlltool = b.addSystemCommand(&.{ b.graph.zig_exe, "dlltool", "-m", machine, "-d" });
        const def: []const u8, const dll: []const u8 = switch (abi) {
            .abi3 => .{ "python3", "python3" },
            .cp313t => .{ "free_threaded", "python313t" },
            .cp314t => .{ "free_threaded", "python314t" },
            .abi3t => .{ "python3t", "python3t" },
        };
        dlltool.addFileArg(b.path(b.fmt("zsrc/py/{s}.def", .{def})));
        dlltool.addArgs(&.{ "-D", b.fmt("{s}.dll", .{dll}), "-l" });
        ext_mod.addObjectFile(dlltool.addOutputFileArg(b.fmt("{s}.lib", .{dll})));
    }
    const ext = b.addLibrary(.{ .name = "_zthread", .linkage = .dynamic, .root_module = ext_mod });
    // Py* symbols are resolved against the interpreter when the module is loaded.
    ext.linker_allow_shlib_undefined = true;
    const install_ext = b.addInstallFileWithDir(if (tsan_module) linkForTsan(b, ext) else ext.getEmittedBin(), .lib, ext_name);
    b.getInstallStep().dependOn(&install_ext.step);

    // `zig build layouts -Dabi=...`: print the layouts zsrc/py/abi.zig declares for the ABI (tools/layouts.py
    // compares them with CPython's headers). A native program, with the module's options.
    const layouts = b.addExecutable(.{ .name = "layouts", .root_module = b.createModule(.{
        .root_source_file = b.path("zsrc/py/layouts.zig"),
        .target = b.graph.host,
        .link_libc = true,
        .imports = &.{.{ .name = "build_options", .module = options.createModule() }},
    }) });
    b.step("layouts", "Print the CPython layouts abi.zig declares for -Dabi").dependOn(&b.addRunArtifact(layouts).step);

    // -Dtsan: the core's tests under ThreadSanitizer (the module itself is never built with it).
    const tsan = b.option(bool, "tsan", "Run the core's tests under ThreadSanitizer") orelse false;
    const core_tests = b.addTest(.{ .root_module = if (!tsan) core else b.createModule(.{
        .root_source_file = b.path("zsrc/core/root.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .sanitize_thread = true,
    }) });
    const test_step = b.step("test", "Run the core's tests");
    // -Dtest-runner runs the test binary through an emulator, one argument per option, e.g.
    //   -Dtarget=aarch64-linux-gnu -Dtest-runner=qemu-aarch64-static -Dtest-runner=-L -Dtest-runner=SYSROOT
    //   -Dtarget=x86_64-windows-gnu -Dtest-runner=wine
    // The binary then runs standalone and prints "All N tests passed."; its exit status decides.
    if (b.option([]const []const u8, "test-runner", "Command (one argument per option) that runs the test binary")) |runner| {
        const run = b.addSystemCommand(runner);
        run.addArtifactArg(core_tests);
        test_step.dependOn(&run.step);
    } else {
        test_step.dependOn(&b.addRunArtifact(core_tests).step);
    }
    // For targets nothing here can run (macOS, FreeBSD): compile and link the test binary only.
    const test_build_step = b.step("test-build", "Compile and link the core's tests without running them");
    test_build_step.dependOn(&b.addInstallArtifact(core_tests, .{}).step);
}

/// -Dtsan-module: Zig links its own ThreadSanitizer runtime into any binary it instruments, but a module loaded
/// by a TSan-built CPython must use the interpreter's runtime (one per process). So the module's instrumented
/// code is taken as LLVM bitcode, compiled and linked by `zig cc` with no runtime: its `__tsan_*` calls bind to
/// the interpreter's when it is loaded. tools/tsan_shim.c adds the two entry points gcc 12's runtime lacks.
fn linkForTsan(b: *std.Build, ext: *std.Build.Step.Compile) std.Build.LazyPath {
    const compile = b.addSystemCommand(&.{ b.graph.zig_exe, "cc", "-c", "-fPIC", "-O2", "-fsanitize=thread", "-Wno-backend-plugin" });
    compile.addFileArg(ext.getEmittedLlvmBc());
    compile.addArg("-o");
    const object = compile.addOutputFileArg("_zthread.o");
    const link = b.addSystemCommand(&.{ b.graph.zig_exe, "cc", "-shared", "-O2", "-fno-builtin", "-Wl,--allow-shlib-undefined" });
    link.addFileArg(object);
    link.addFileArg(b.path("tools/tsan_shim.c"));
    link.addArg("-o");
    return link.addOutputFileArg("_zthread.so");
}
