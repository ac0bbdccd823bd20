//! The one place that knows how to build zthread, for any target.
//!
//!   zig build                      the native module, installed as zig-out/lib/<name> (see -Dext-name)
//!   zig build test                 the core's tests (no Python needed); -Dtest-runner=... for emulators
//!   zig build test-build           compile and link the core's tests only (targets that cannot run here)
//!   zig build test -Dtsan          the core's tests under ThreadSanitizer
//!   zig build -Dtarget=aarch64-linux-gnu.2.17 ...   cross builds: always for the target's baseline CPU
const std = @import("std");

pub fn build(b: *std.Build) void {
    // A wheel must run on every CPU of its platform: default to the baseline model, never the host's.
    const target = b.standardTargetOptions(.{ .default_target = .{ .cpu_model = .baseline } });
    const optimize = b.standardOptimizeOption(.{});
    const os = target.result.os.tag;
    const default_ext_name = if (os == .windows) "_zthread.pyd" else "_zthread.abi3.so";
    const ext_name = b.option([]const u8, "ext-name", "File name of the built extension module") orelse default_ext_name;

    const core = b.createModule(.{
        .root_source_file = b.path("zsrc/core/root.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
    });

    // -Dref-calls: count references through Py_IncRef/Py_DecRef instead of inline adds, so that a CPython debug
    // build's sys.gettotalrefcount() sees every one (tools/refcount-debug.py); never for a release.
    const options = b.addOptions();
    options.addOption(bool, "ref_calls", b.option(bool, "ref-calls", "Py_IncRef/Py_DecRef calls for every reference (CPython debug builds)") orelse false);
    const ext_mod = b.createModule(.{
        .root_source_file = b.path("zsrc/py/module.zig"),
        .target = target,
        .optimize = optimize,
        .link_libc = true,
        .pic = true,
        .strip = optimize != .debug,
        .imports = &.{
            .{ .name = "core", .module = core },
            .{ .name = "build_options", .module = options.createModule() },
        },
    });
    if (os == .windows) {
        // Py* symbols come from python3.dll (the stable ABI): link an import library made from the .def
        // that lists exactly what zsrc/py/abi.zig declares.
        const machine = switch (target.result.cpu.arch) {
            .x86_64 => "i386:x86-64",
            .aarch64 => "arm64",
            else => @panic("zthread: no Windows import library for this architecture"),
        };
        const dlltool = b.addSystemCommand(&.{ b.graph.zig_exe, "dlltool", "-m", machine, "-d" });
        dlltool.addFileArg(b.path("zsrc/py/python3.def"));
        dlltool.addArg("-l");
        ext_mod.addObjectFile(dlltool.addOutputFileArg("python3.lib"));
    }
    const ext = b.addLibrary(.{ .name = "_zthread", .linkage = .dynamic, .root_module = ext_mod });
    // Py* symbols are resolved against the interpreter when the module is loaded.
    ext.linker_allow_shlib_undefined = true;
    const install_ext = b.addInstallFileWithDir(ext.getEmittedBin(), .lib, ext_name);
    b.getInstallStep().dependOn(&install_ext.step);

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
