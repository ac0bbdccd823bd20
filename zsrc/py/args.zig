//! Argument conversion with CPython's exact errors, without PyArg_Parse* (hot paths parse by hand).
const std = @import("std");
const builtin = @import("builtin");
const abi = @import("abi.zig");
const version = @import("version.zig");

const Object = abi.Object;

/// `timeout=-1`, CPython's "no timeout given" marker, in nanoseconds.
pub const unset_timeout_ns: i64 = -std.time.ns_per_s;

/// CPython's PY_TIMEOUT_MAX in microseconds: the longest wait the platform's lock API can express.
pub const py_timeout_max_us: i64 = if (builtin.os.tag == .windows)
    0xFFFF_FFFE * 1000 // WaitForSingleObject takes a DWORD of milliseconds (bpo-41710)
else
    std.math.maxInt(i64) / 1000;

/// `_thread.TIMEOUT_MAX`: floor(min(PY_TIMEOUT_MAX in seconds, PyTime_MAX in seconds)).
pub fn timeoutMaxSeconds() f64 {
    const timeout_max_s = @as(f64, @floatFromInt(py_timeout_max_us)) * 1e-6;
    const time_max_s = @as(f64, @floatFromInt(std.math.maxInt(i64))) * 1e-9;
    return @floor(@min(timeout_max_s, time_max_s));
}

/// `_PyTime_FromSecondsObject(obj, _PyTime_ROUND_TIMEOUT)`: seconds (int, float or __index__) to ns,
/// rounding away from zero. Returns null with an exception set.
pub fn secondsToNs(obj: *Object) ?i64 {
    if (abi.isFloat(obj)) {
        const seconds = abi.PyFloat_AsDouble(obj);
        if (seconds == -1.0 and abi.PyErr_Occurred() != null) return null;
        if (std.math.isNan(seconds)) {
            abi.PyErr_SetString(abi.PyExc_ValueError, "Invalid value NaN (not a number)");
            return null;
        }
        const ns = seconds * 1e9;
        const limit = @as(f64, @floatFromInt(std.math.maxInt(i64))) + 1.0; // 2**63, exact in f64
        // Checked before rounding, the same: a double of 2**52 or more is a whole number already.
        if (!(ns >= -limit and ns < limit)) return timestampOverflow(.float);
        return awayFromZero(ns);
    }
    if (version.atLeast(14) and abi.PyIndex_Check(obj) == 0) return notANumber(obj);
    const seconds = abi.PyLong_AsLongLong(obj);
    if (seconds == -1 and abi.PyErr_Occurred() != null) {
        if (abi.PyErr_ExceptionMatches(abi.PyExc_OverflowError) != 0) return timestampOverflow(.int);
        return null;
    }
    const ns = std.math.mul(i64, seconds, std.time.ns_per_s) catch return timestampOverflow(.int);
    return ns;
}

/// `x` (-2**63 <= x < 2**63) rounded away from zero: a truncating conversion and a step. Not `@ceil`/`@floor`,
/// which on the wheels' baseline x86_64 (no SSE4.1 `roundsd`) are calls into compiler_rt (27 instructions).
fn awayFromZero(x: f64) i64 {
    const toward_zero: i64 = @intFromFloat(x);
    const back: f64 = @floatFromInt(toward_zero);
    // A double that is not whole is under 2**52 in magnitude: the step cannot overflow.
    return if (x > back) toward_zero + 1 else if (x < back) toward_zero - 1 else toward_zero;
}

/// 3.14+: the conversion names both accepted kinds (3.14) or says "real number" (3.15).
fn notANumber(obj: *Object) ?i64 {
    const name = typeName(obj) orelse return null;
    defer abi.decRef(name);
    if (version.atLeast(15)) {
        _ = abi.PyErr_Format(abi.PyExc_TypeError, "must be real number, not %U", name);
    } else {
        _ = abi.PyErr_Format(abi.PyExc_TypeError, "'%U' object cannot be interpreted as an integer or float", name);
    }
    return null;
}

const Seconds = enum { float, int };

/// The OverflowError of the running interpreter's own seconds-to-PyTime conversion, for a float or an int
/// timeout, raised by that conversion itself: `time.sleep(probe)` with a probe no CPython can convert (1e300
/// seconds, 2**64-1 seconds) fails in it at once and never sleeps. Its wording changed within minor versions
/// (a float's was "timestamp too large to convert to C _PyTime_t" in 3.11.2, is "timestamp out of range for
/// platform time_t" in 3.11.7), which a table by minor version cannot follow; the table below is what
/// the released versions checked here say, used only if the probe cannot run.
fn timestampOverflow(comptime from: Seconds) ?i64 {
    abi.PyErr_Clear(); // the int conversion's own OverflowError, replaced below
    if (raiseFromSleep(from)) return null;
    abi.PyErr_Clear();
    const msg: [*:0]const u8 = if (version.atLeast(14))
        "timestamp out of range for C PyTime_t"
    else if (from == .float and version.atLeast(11))
        "timestamp out of range for platform time_t"
    else if (from == .int and version.atLeast(13))
        "timestamp too large to convert to C PyTime_t"
    else
        "timestamp too large to convert to C _PyTime_t";
    abi.PyErr_SetString(abi.PyExc_OverflowError, msg);
    return null;
}

/// True with time.sleep's OverflowError set; false (an exception may be set) if it could not be had.
fn raiseFromSleep(comptime from: Seconds) bool {
    const time = abi.PyImport_ImportModule("time") orelse return false;
    defer abi.decRef(time);
    const sleep = abi.PyObject_GetAttrString(time, "sleep") orelse return false;
    defer abi.decRef(sleep);
    const probe = (if (from == .float) abi.PyFloat_FromDouble(1e300) else abi.PyLong_FromUnsignedLongLong(std.math.maxInt(c_ulonglong))) orelse return false;
    defer abi.decRef(probe);
    if (abi.PyObject_CallFunctionObjArgs(sleep, probe, @as(?*Object, null))) |slept| {
        abi.decRef(slept); // no CPython converts the probe: never reached
        return false;
    }
    return abi.PyErr_ExceptionMatches(abi.PyExc_OverflowError) != 0;
}

/// PyArg's "i" converter: a C int from an int or an object with __index__.
pub fn toCInt(obj: *Object) ?c_int {
    const value = abi.PyLong_AsLong(obj);
    if (value == -1 and abi.PyErr_Occurred() != null) return null;
    if (value > std.math.maxInt(c_int)) {
        abi.PyErr_SetString(abi.PyExc_OverflowError, "signed integer is greater than maximum");
        return null;
    }
    if (value < std.math.minInt(c_int)) {
        abi.PyErr_SetString(abi.PyExc_OverflowError, "signed integer is less than minimum");
        return null;
    }
    return @intCast(value);
}

/// PyArg's "n" converter: a Py_ssize_t from an int or an object with __index__.
pub fn toSsize(obj: *Object) ?isize {
    const index = abi.PyNumber_Index(obj) orelse return null;
    defer abi.decRef(index);
    const value = abi.PyLong_AsSsize_t(index);
    if (value == -1 and abi.PyErr_Occurred() != null) return null;
    return value;
}

/// "NAME() takes at most N argument(s) (G given)" for METH_VARARGS functions parsed with "|...:NAME".
pub fn tooManyPositional(name: [*:0]const u8, max: isize, given: isize) ?*Object {
    const plural: [*:0]const u8 = if (max == 1) "" else "s";
    _ = abi.PyErr_Format(abi.PyExc_TypeError, "%s() takes at most %zd argument%s (%zd given)", name, max, plural, given);
    return null;
}

pub fn noKeywords(name: [*:0]const u8) ?*Object {
    _ = abi.PyErr_Format(abi.PyExc_TypeError, "%s() takes no keyword arguments", name);
    return null;
}

/// 3.15's `__exit__(exc_type, exc_value, exc_tb, /)` called with another number of arguments.
pub noinline fn exitArgumentCount(nargs: isize) ?*Object {
    _ = abi.PyErr_Format(abi.PyExc_TypeError, "__exit__ expected 3 arguments, got %zd", nargs);
    return null;
}

/// "NAME() takes no arguments (N given)", METH_NOARGS's message for a FASTCALL method. Not inlined, as the
/// other errors of the methods' fast paths: a fast path does not carry the message's call.
noinline fn noArgumentsError(name: [*:0]const u8, nargs: isize) ?*Object {
    _ = abi.PyErr_Format(abi.PyExc_TypeError, "%s() takes no arguments (%zd given)", name, nargs);
    return null;
}

/// The MethodDef of a function or method that takes no arguments (`f` is written as METH_NOARGS's C function),
/// made METH_FASTCALL: CPython 3.11-3.13 specialize a call of a bound METH_FASTCALL builtin
/// (`f = lock.release; f()`, which is how threading.Condition calls its lock) but not of a METH_NOARGS one
/// (up to 2x faster calls). The messages stay METH_NOARGS's: "OWNER.NAME() takes no arguments (N given)" here,
/// and "... takes no keyword arguments" from the interpreter itself, as the flags lack METH_KEYWORDS.
/// `owner` is what CPython names: the type ("lock", "RLock") or, for module functions, "_thread".
pub fn noArgsMethod(comptime owner: []const u8, comptime name: [:0]const u8, comptime f: anytype, comptime doc: [*:0]const u8) abi.MethodDef {
    const wrapper = struct {
        fn call(o: *Object, _: [*]const *Object, nargs: isize) callconv(.c) ?*Object {
            if (nargs != 0) return noArgumentsError(owner ++ "." ++ name, nargs);
            return @call(.always_inline, f, .{ o, null });
        }
    };
    return .{ .ml_name = name, .ml_meth = @ptrCast(&wrapper.call), .ml_flags = abi.METH_FASTCALL, .ml_doc = doc };
}

pub inline fn keywordCount(kwnames: ?*Object) isize {
    return if (kwnames) |k| abi.PyTuple_Size(k) else 0;
}

/// PyArg_ParseTupleAndKeywords for objects ("O|OO..."): fills `out` (null where not given) from
/// positional and keyword arguments, with CPython's messages for every misuse.
pub fn parseKeywords(
    fname: [*:0]const u8,
    comptime names: []const [*:0]const u8,
    required: usize,
    argv: [*]const *Object,
    nargs: isize,
    kwnames: ?*Object,
    out: *[names.len]?*Object,
) bool {
    const nkw = keywordCount(kwnames);
    const max: isize = names.len;
    if (nargs + nkw > max) {
        const kind: [*:0]const u8 = if (nargs == 0) "keyword " else "";
        _ = abi.PyErr_Format(abi.PyExc_TypeError, "%s() takes at most %zd %sargument%s (%zd given)", fname, max, kind, @as([*:0]const u8, if (max == 1) "" else "s"), nargs + nkw);
        return false;
    }
    var matched: isize = 0;
    for (out, names, 0..) |*value, name, i| {
        value.* = null;
        if (i < nargs) {
            value.* = argv[i];
        } else if (findKeyword(argv, nargs, kwnames, name)) |v| {
            value.* = v;
            matched += 1;
        } else if (i < required) {
            _ = abi.PyErr_Format(abi.PyExc_TypeError, "%s() missing required argument '%s' (pos %zd)", fname, name, @as(isize, @intCast(i + 1)));
            return false;
        }
    }
    if (nkw > matched) {
        badKeyword(fname, argv, nargs, kwnames, names);
        return false;
    }
    return true;
}

pub const Acquire = struct {
    /// -1: wait forever; 0: do not wait; otherwise the longest wait.
    timeout_ns: i64,
};

/// `lock.acquire(blocking=True, timeout=-1)`, as `lock_acquire_parse_args` of the running CPython parses
/// it (PyArg_ParseTupleAndKeywords "|iO:acquire" on 3.10/3.11, "|pO:acquire" from 3.12).
pub fn parseAcquire(kw: ?*const Keywords, args: [*]const *Object, nargs: isize, kwnames: ?*Object) ?Acquire {
    return parseAcquireNamed(kw, "acquire", args, nargs, kwnames);
}

/// "blocking" and "timeout", interned when the module is initialised, one pair per interpreter (module
/// state). The keyword names of a call are interned strings (the compiler interns identifiers), so a pointer
/// comparison finds them; a string comparison remains for names that are equal but not interned
/// (`**{"".join(...): ...}`), or that another interpreter interned.
pub const Keywords = struct {
    blocking: ?*Object = null,
    timeout: ?*Object = null,

    pub fn init(self: *Keywords) bool {
        self.blocking = abi.PyUnicode_InternFromString("blocking") orelse return false;
        self.timeout = abi.PyUnicode_InternFromString("timeout") orelse return false;
        return true;
    }

    pub fn deinit(self: *Keywords) void {
        abi.xDecRef(self.blocking);
        abi.xDecRef(self.timeout);
        self.* = .{};
    }
};

/// As `parseAcquire`, for a method whose messages carry another name (3.15's `acquire_lock`). `kw`, the
/// module's interned names, is needed (and looked up by the caller) only when there are keywords.
pub inline fn parseAcquireNamed(kw: ?*const Keywords, fname: [*:0]const u8, args: [*]const *Object, nargs: isize, kwnames: ?*Object) ?Acquire {
    if (kwnames == null and nargs <= 2) return parseAcquirePositional(args, nargs);
    return parseAcquireKeywords(kw, fname, args, nargs, kwnames);
}

/// `acquire(blocking, timeout)` by position, as `threading` calls it (`Condition.wait`'s `waiter.acquire(True,
/// timeout)`): no keyword pass, and none of its frame (a function of its own, so that the general one's
/// stack and stack protector are not set up for this call).
noinline fn parseAcquirePositional(args: [*]const *Object, nargs: isize) ?Acquire {
    const blocking = if (nargs > 0) toBlocking(args[0]) orelse return null else true;
    return withTimeout(blocking, if (nargs > 1) args[1] else null);
}

/// The rest of the parse, once `blocking` is converted: `timeout`, if given, converted and both checked.
inline fn withTimeout(blocking: bool, timeout: ?*Object) ?Acquire {
    const timeout_ns = if (timeout) |obj| secondsToNs(obj) orelse return null else unset_timeout_ns;
    return checkTimeout(blocking, timeout_ns);
}

noinline fn parseAcquireKeywords(kw: ?*const Keywords, fname: [*:0]const u8, args: [*]const *Object, nargs: isize, kwnames: ?*Object) ?Acquire {
    const nkw = keywordCount(kwnames);
    if (nargs + nkw > 2) {
        const kind: [*:0]const u8 = if (nargs == 0) "keyword " else "";
        _ = abi.PyErr_Format(abi.PyExc_TypeError, "%s() takes at most 2 %sarguments (%zd given)", fname, kind, nargs + nkw);
        return null;
    }
    const names = [_][*:0]const u8{ "blocking", "timeout" };
    var values = [_]?*Object{ if (nargs > 0) args[0] else null, if (nargs > 1) args[1] else null };
    // One pass over the keywords. An unknown one, or one naming a parameter given by position, is
    // reported after `blocking` is converted, as PyArg_ParseTupleAndKeywords orders its errors.
    var misplaced = false;
    var k: isize = 0;
    while (k < nkw) : (k += 1) {
        const key = abi.PyTuple_GetItem(kwnames.?, k).?;
        const interned = kw.?;
        const slot: usize = if (key == interned.blocking or (key != interned.timeout and abi.PyUnicode_CompareWithASCIIString(key, names[0]) == 0))
            0
        else if (key == interned.timeout or abi.PyUnicode_CompareWithASCIIString(key, names[1]) == 0)
            1
        else {
            misplaced = true;
            continue;
        };
        if (slot < nargs) {
            misplaced = true;
        } else {
            values[slot] = args[@intCast(nargs + k)];
        }
    }
    var blocking = true;
    if (values[0]) |obj| blocking = toBlocking(obj) orelse return null;
    if (misplaced) {
        badKeyword(fname, args, nargs, kwnames, &names);
        return null;
    }
    return withTimeout(blocking, values[1]);
}

pub fn toBlocking(obj: *Object) ?bool {
    // True and False are what callers pass; "p" and "i" both read them as 1 and 0.
    if (obj == abi.trueObject()) return true;
    if (obj == abi.falseObject()) return false;
    if (version.atLeast(12)) {
        const truth = abi.PyObject_IsTrue(obj);
        if (truth < 0) return null;
        return truth != 0;
    }
    const value = toCInt(obj) orelse return null;
    return value != 0;
}

fn checkTimeout(blocking: bool, timeout_ns: i64) ?Acquire {
    if (!blocking and timeout_ns != unset_timeout_ns) {
        abi.PyErr_SetString(abi.PyExc_ValueError, "can't specify a timeout for a non-blocking call");
        return null;
    }
    if (timeout_ns < 0 and timeout_ns != unset_timeout_ns) {
        const msg = if (version.atLeast(13)) "timeout value must be a non-negative number" else "timeout value must be positive";
        abi.PyErr_SetString(abi.PyExc_ValueError, msg);
        return null;
    }
    if (!blocking) return .{ .timeout_ns = 0 };
    if (timeout_ns == unset_timeout_ns) return .{ .timeout_ns = -1 };
    // CPython checks the timeout in microseconds, rounded up: ceil(ns / 1000) > max exactly when ns > max * 1000
    // (which fits in an i64: max is at most maxInt(i64) / 1000), without the division.
    if (timeout_ns > py_timeout_max_us * 1000) {
        abi.PyErr_SetString(abi.PyExc_OverflowError, "timeout value is too large");
        return null;
    }
    return .{ .timeout_ns = timeout_ns };
}

fn findKeyword(args: [*]const *Object, nargs: isize, kwnames: ?*Object, name: [*:0]const u8) ?*Object {
    const names = kwnames orelse return null;
    const n = abi.PyTuple_Size(names);
    var i: isize = 0;
    while (i < n) : (i += 1) {
        const key = abi.PyTuple_GetItem(names, i).?;
        if (abi.PyUnicode_CompareWithASCIIString(key, name) == 0) return args[@intCast(nargs + i)];
    }
    return null;
}

/// Sets the TypeError PyArg_ParseTupleAndKeywords raises for a keyword that repeats a positional
/// argument or names no parameter.
fn badKeyword(fname: [*:0]const u8, args: [*]const *Object, nargs: isize, kwnames: ?*Object, names: []const [*:0]const u8) void {
    for (names, 0..) |name, i| {
        if (i >= nargs) break;
        if (findKeyword(args, nargs, kwnames, name) != null) {
            _ = abi.PyErr_Format(abi.PyExc_TypeError, "argument for %s() given by name ('%s') and position (%zd)", fname, name, @as(isize, @intCast(i + 1)));
            return;
        }
    }
    const keys = kwnames.?;
    var k: isize = 0;
    while (k < abi.PyTuple_Size(keys)) : (k += 1) {
        const key = abi.PyTuple_GetItem(keys, k).?;
        var known = false;
        for (names) |name| known = known or abi.PyUnicode_CompareWithASCIIString(key, name) == 0;
        if (known) continue;
        if (version.atLeast(13)) {
            _ = abi.PyErr_Format(abi.PyExc_TypeError, "%s() got an unexpected keyword argument '%U'", fname, key);
        } else {
            _ = abi.PyErr_Format(abi.PyExc_TypeError, "'%U' is an invalid keyword argument for %s()", key, fname);
        }
        return;
    }
}

/// What PyArg's converters print for a wrong argument: "None" for None, else the type's tp_name.
pub fn argTypeName(obj: *Object) ?*Object {
    if (obj == abi.noneObject()) return abi.PyUnicode_FromString("None");
    return typeName(obj);
}

/// The tp_name of `obj`'s type when that is zthread's type from `spec_name` (`exact`) or a Python subclass
/// of it: a PyType_FromSpec type's tp_name is the spec's dotted name (its `__name__` only the last part),
/// a subclass's its `__name__`. A new reference, or null with an exception set.
pub fn instanceTypeName(obj: *Object, exact: bool, spec_name: [*:0]const u8) ?*Object {
    if (exact) return abi.PyUnicode_FromString(spec_name);
    return typeName(obj);
}

/// The type's C-level name (tp_name), which CPython's messages print: `__name__` for heap types and
/// builtins, `module.name` for other static types. A new reference, or null with an exception set.
pub fn typeName(obj: *Object) ?*Object {
    const tp = abi.typeObject(abi.typeOf(obj));
    const name = abi.PyObject_GetAttrString(tp, "__name__") orelse return null;
    if (abi.PyType_GetFlags(abi.typeOf(obj)) & abi.Py_TPFLAGS_HEAPTYPE != 0) return name;
    defer abi.decRef(name);
    const module = abi.PyObject_GetAttrString(tp, "__module__") orelse return null;
    defer abi.decRef(module);
    if (abi.PyUnicode_CompareWithASCIIString(module, "builtins") == 0) return abi.newRef(name);
    return abi.PyUnicode_FromFormat("%U.%U", module, name);
}
