//! The CPython version the module was loaded into. One abi3 binary serves 3.10 and later, and a few
//! behaviours (argument parsing, messages) differ by version: the layer asks `minor` at run time.
const std = @import("std");
const core = @import("core");
const abi = @import("abi.zig");

/// Minor version of the running CPython 3.x, set once, by the first import in the process (interpreters with
/// their own GILs may import at the same time: `detect` runs under a lock, and later readers see `detected`).
pub var minor: u32 = 10;

/// Micro version of the running CPython (the 15 of 3.13.15): a few fixes reached a minor version in a
/// patch release.
pub var micro: u32 = 0;

/// A debug build of CPython (Py_DEBUG, e.g. Debian's python3.14-dbg): it has sys.gettotalrefcount.
/// Its C-stack margin, and so `stack_size`'s minimum on 3.14+, is twice a release build's.
pub var debug_build = false;

var detected = std.atomic.Value(bool).init(false);
var detect_lock: core.Lock = .{};

/// Reads the version from `Py_GetVersion()` ("3.12.1 (main, ...)"): `Py_Version` is only in the stable
/// ABI from 3.11. Once per process; the values are the same in every interpreter.
pub fn detect() void {
    if (detected.load(.acquire)) return;
    while (detect_lock.acquire(.forever) != .acquired) {}
    defer detect_lock.release() catch unreachable;
    if (detected.load(.monotonic)) return;
    read();
    detected.store(true, .release);
}

fn read() void {
    const text = abi.Py_GetVersion();
    var i: usize = 0;
    while (text[i] != '.' and text[i] != 0) : (i += 1) {}
    if (text[i] != '.') return;
    i += 1;
    minor = number(text, &i);
    if (text[i] == '.') {
        i += 1;
        micro = number(text, &i);
    }
    abi.objects_immortal = minor >= 12;
    debug_build = abi.PySys_GetObject("gettotalrefcount") != null;
}

/// The decimal number at text[i.*], i.* moved past it.
fn number(text: [*:0]const u8, i: *usize) u32 {
    var value: u32 = 0;
    while (text[i.*] >= '0' and text[i.*] <= '9') : (i.* += 1) value = value * 10 + (text[i.*] - '0');
    return value;
}

pub inline fn atLeast(wanted_minor: u32) bool {
    return minor >= wanted_minor;
}

/// At least 3.`wanted_minor`.`wanted_micro` (a later minor version counts too).
pub fn atLeastMicro(wanted_minor: u32, wanted_micro: u32) bool {
    return minor > wanted_minor or (minor == wanted_minor and micro >= wanted_micro);
}

/// CPython 3.12 and 3.13 with the GIL: their specializing interpreter runs a small Python method (such as a
/// `threading.Condition` fallback for a hook its lock lacks) in a few hundred instructions. 3.10-3.11 call one
/// for more, 3.14+ too (for other reasons: docs/DESIGN.md, "Condition's hooks on the lock"), and the
/// free-threaded 3.13 build does not specialize at all.
/// (`abi.free_threaded` is the build's: also true for the abi3t build on a 3.15 with the GIL, which this
/// test's 3.12-3.13 never meet.)
pub fn cheapPythonCalls() bool {
    return (minor == 12 or minor == 13) and !abi.free_threaded;
}
