//! The part of CPython's ABI that zthread uses, declared by hand: no Python headers, so one source builds for
//! every target. This is the only file that declares a CPython symbol, and the only one that knows which ABI
//! the build targets (build.zig's -Dabi):
//! - `abi3`: the stable ABI of CPython 3.10 and later with the GIL (one binary for every version);
//! - `cp313t`, `cp314t`: free-threaded CPython 3.13's and 3.14's own ABIs (PEP 703: no GIL, a larger object
//!   header, references counted by the interpreter's functions). The two are the same for everything zthread
//!   uses but the header of a static object (`module_def_head_init`) and the DLL on Windows (build.zig);
//! - `abi3t`: the stable ABI of CPython 3.15 and later, with and without the GIL (PEP 803): the object is
//!   opaque (`Object` has no fields: its type through `Py_TYPE`, references through `Py_IncRef`/`Py_DecRef`,
//!   an instance's own fields where `PyObject_GetTypeData` says, `data`), the module is defined by
//!   `PyModExport__zthread`'s slots (`Slot`), and it runs without a GIL as the free-threaded builds do.
//! Everything that differs between them (the object header, reference counting, the few calls that only
//! exist in one, or that must be made differently without a GIL) is decided here; the rest of the layer asks
//! none of it. The Windows import libraries' .defs (`zsrc/py/python3.def`; `free_threaded.def`, for
//! python313t.dll and python314t.dll) list exactly the functions and data declared below for their ABI, and a
//! test keeps them in step. tests/test_layouts.py compares the layouts below with CPython's own headers.
//!
//! Layouts are those of 64-bit and 32-bit platforms (Py_ssize_t = isize).
const std = @import("std");
const builtin = @import("builtin");

pub const Abi = @TypeOf(@import("build_options").abi);
pub const target_abi: Abi = @import("build_options").abi;
/// No GIL: the interpreter runs threads in parallel, and zthread's objects are reached by several at once.
pub const free_threaded = switch (target_abi) {
    .abi3 => false,
    .cp313t, .cp314t, .abi3t => true,
};
/// abi3t: the object header's layout is not the extension's to know (it differs between the builds one binary
/// serves).
pub const opaque_objects = target_abi == .abi3t;
/// How the module is defined: `PyInit__zthread` returning a `ModuleDef`, or (abi3t) `PyModExport__zthread`
/// returning `Slot`s.
pub const module_by_slots = target_abi == .abi3t;

pub const Object = if (opaque_objects) opaque {} else Header(*TypeObject);

/// PyObject_HEAD, its type pointer of type `TypePtr`.
fn Header(comptime TypePtr: type) type {
    return switch (target_abi) {
        .abi3 => extern struct {
            ob_refcnt: isize,
            ob_type: TypePtr,
        },
        // Include/object.h with Py_GIL_DISABLED (3.13, 3.14): 32 bytes on 64-bit platforms.
        .cp313t, .cp314t => extern struct {
            ob_tid: usize,
            ob_flags: u16, // 3.13: _padding
            ob_mutex: u8,
            ob_gc_bits: u8,
            ob_ref_local: u32,
            ob_ref_shared: isize,
            ob_type: TypePtr,
        },
        .abi3t => @compileError("abi3t: the object header is opaque"),
    };
}

/// Opaque in the stable ABI: read it only through PyType_GetFlags/PyType_GetSlot.
pub const TypeObject = opaque {};
pub const ThreadState = opaque {};
pub const InterpreterState = opaque {};

pub const CFunction = *const anyopaque;
pub const MethodDef = extern struct {
    ml_name: ?[*:0]const u8,
    ml_meth: ?CFunction,
    ml_flags: c_int,
    ml_doc: ?[*:0]const u8,
};
pub const sentinel_method: MethodDef = .{ .ml_name = null, .ml_meth = null, .ml_flags = 0, .ml_doc = null };

pub const METH_VARARGS = 0x0001;
pub const METH_KEYWORDS = 0x0002;
pub const METH_NOARGS = 0x0004;
pub const METH_O = 0x0008;
pub const METH_FASTCALL = 0x0080;

pub const ModuleDefBase = extern struct {
    ob_base: Header(?*TypeObject),
    m_init: ?*const fn () callconv(.c) ?*Object,
    m_index: isize,
    m_copy: ?*Object,
};
/// PyModuleDef_HEAD_INIT: an immortal object header with no type yet (PyModuleDef_Init sets it).
pub const module_def_head_init: ModuleDefBase = .{
    .ob_base = switch (target_abi) {
        .abi3 => .{ .ob_refcnt = 1, .ob_type = null },
        .cp313t, .cp314t => .{
            .ob_tid = 0,
            // 3.14: _Py_STATICALLY_ALLOCATED_FLAG (Include/refcount.h); 3.13's field is padding.
            .ob_flags = if (target_abi == .cp314t) 4 else 0,
            .ob_mutex = 0,
            .ob_gc_bits = 0,
            .ob_ref_local = 0xFFFF_FFFF, // _Py_IMMORTAL_REFCNT_LOCAL
            .ob_ref_shared = 0,
            .ob_type = null,
        },
        .abi3t => @compileError("abi3t: modules are defined by slots (module_by_slots)"),
    },
    .m_init = null,
    .m_index = 0,
    .m_copy = null,
};
pub const ModuleDefSlot = extern struct { slot: c_int, value: ?*const anyopaque };
pub const Py_mod_exec = 2;
/// Include/moduleobject.h (limited API from 3.12): the module supports isolated interpreters, each with
/// its own GIL. 3.10 and 3.11 reject the slot id ("uses unknown slot ID 3").
pub const Py_mod_multiple_interpreters = 3;
pub const Py_MOD_PER_INTERPRETER_GIL_SUPPORTED: *const anyopaque = @ptrFromInt(2);
/// 3.13+: the module does not need the GIL; without it a free-threaded interpreter turns the GIL back on when
/// it imports the module. Builds with the GIL accept and ignore it.
pub const Py_mod_gil = 4;
pub const Py_MOD_GIL_NOT_USED: *const anyopaque = @ptrFromInt(1);
pub const ModuleDef = extern struct {
    m_base: ModuleDefBase,
    m_name: [*:0]const u8,
    m_doc: ?[*:0]const u8,
    m_size: isize,
    m_methods: ?[*]const MethodDef,
    m_slots: ?[*]const ModuleDefSlot,
    m_traverse: ?*const anyopaque,
    m_clear: ?*const anyopaque,
    m_free: ?*const anyopaque,
};

/// Include/slots.h (3.15+): one entry of the slot array `PyModExport__zthread` returns (abi3t). `value` is the
/// union of pointer, function and size.
pub const Slot = extern struct {
    id: u16,
    flags: u16 = 0,
    reserved: u32 = 0,
    value: ?*const anyopaque,
};
/// sl_flags: the pointed-to data lives as long as the process (`PySlot_STATIC_DATA`), or the value is a small
/// integer in pointer form (`PySlot_DATA`).
pub const PySlot_STATIC = 0x0002;
pub const PySlot_INTPTR = 0x0004;
/// Include/slots_generated.h: the module slots' ids with Py_LIMITED_API >= 3.15.
pub const Py_mod_exec_slot = 85;
pub const Py_mod_multiple_interpreters_slot = 86;
pub const Py_mod_gil_slot = 87;
pub const Py_mod_name = 100;
pub const Py_mod_doc = 101;
pub const Py_mod_state_size = 102;
pub const Py_mod_methods = 103;
pub const Py_mod_state_traverse = 104;
pub const Py_mod_state_clear = 105;
pub const Py_mod_state_free = 106;
pub const Py_mod_abi = 109;
/// Include/modsupport.h's PyABIInfo (3.15+), for the mandatory Py_mod_abi slot.
pub const ABIInfo = extern struct {
    major: u8 = 1,
    minor: u8 = 0,
    flags: u16,
    build_version: u32,
    abi_version: u32,
};
pub const PyABIInfo_STABLE = 0x0001;
pub const PyABIInfo_GIL = 0x0002;
pub const PyABIInfo_FREETHREADED = 0x0004;

pub const GetSetDef = extern struct {
    name: ?[*:0]const u8,
    get: ?*const anyopaque,
    set: ?*const anyopaque,
    doc: ?[*:0]const u8,
    closure: ?*anyopaque,
};

pub const TypeSlot = extern struct { slot: c_int, pfunc: ?*const anyopaque };
pub const TypeSpec = extern struct {
    name: [*:0]const u8,
    basicsize: c_int,
    itemsize: c_int,
    flags: c_uint,
    slots: [*]const TypeSlot,
};
// Include/typeslots.h
pub const Py_tp_dealloc = 52;
pub const Py_tp_doc = 56;
pub const Py_tp_methods = 64;
pub const Py_tp_new = 65;
pub const Py_tp_repr = 66;
pub const Py_tp_members = 72;
pub const Py_tp_alloc = 47;
pub const Py_tp_base = 48;
pub const Py_tp_free = 74;
pub const Py_tp_getset = 73;
pub const Py_tp_init = 60;
pub const Py_tp_getattro = 58;
pub const Py_tp_setattro = 69;
pub const Py_tp_traverse = 71;
pub const Py_tp_clear = 51;

pub const MemberDef = extern struct {
    name: ?[*:0]const u8,
    type: c_int,
    offset: isize,
    flags: c_int,
    doc: ?[*:0]const u8,
};
pub const T_PYSSIZET = 19;
pub const READONLY = 1;
/// The member's offset is from the type's own data (negative basicsize, abi3t), not from the object (3.12+).
pub const Py_RELATIVE_OFFSET = 8;

// Include/object.h
pub const Py_TPFLAGS_DISALLOW_INSTANTIATION: c_ulong = 1 << 7;
pub const Py_TPFLAGS_IMMUTABLETYPE: c_ulong = 1 << 8;
pub const Py_TPFLAGS_HEAPTYPE: c_ulong = 1 << 9;
pub const Py_TPFLAGS_BASETYPE: c_ulong = 1 << 10;
pub const Py_TPFLAGS_HAVE_GC: c_ulong = 1 << 14;
pub const Py_TPFLAGS_HAVE_VERSION_TAG: c_ulong = 1 << 18;
pub const Py_TPFLAGS_DEFAULT: c_ulong = Py_TPFLAGS_HAVE_VERSION_TAG;
pub const Py_TPFLAGS_LONG_SUBCLASS: c_ulong = 1 << 24;
pub const Py_TPFLAGS_TUPLE_SUBCLASS: c_ulong = 1 << 26;
pub const Py_TPFLAGS_BYTES_SUBCLASS: c_ulong = 1 << 27;
pub const Py_TPFLAGS_UNICODE_SUBCLASS: c_ulong = 1 << 28;
pub const Py_TPFLAGS_DICT_SUBCLASS: c_ulong = 1 << 29;

// Object protocol and reference counts.
pub extern fn Py_IncRef(o: ?*Object) void;
pub extern fn Py_DecRef(o: ?*Object) void;
pub extern fn PyObject_ClearWeakRefs(o: *Object) void;
pub extern fn PyObject_Call(callable: *Object, args: *Object, kwargs: ?*Object) ?*Object;
pub extern fn PyObject_CallFunctionObjArgs(callable: *Object, ...) ?*Object;
pub extern fn PyObject_IsTrue(o: *Object) c_int;
pub extern fn PyObject_Repr(o: *Object) ?*Object;
/// Include/object.h's comparison operators.
pub const Py_EQ: c_int = 2;
pub extern fn PyObject_RichCompareBool(a: *Object, b: *Object, op: c_int) c_int;
pub extern fn PyObject_SetAttrString(o: *Object, name: [*:0]const u8, v: *Object) c_int;
pub extern fn PyCallable_Check(o: *Object) c_int;
pub extern fn PyObject_GenericGetAttr(o: *Object, name: *Object) ?*Object;
pub extern fn PyObject_GenericSetAttr(o: *Object, name: *Object, v: ?*Object) c_int;
pub extern fn PyObject_GC_UnTrack(o: *anyopaque) void;
/// What the PyObject_New and PyObject_GC_New macros call: memory for an instance of `tp` (its basicsize, which
/// CPython knows in every ABI), its header initialised, not tracked. Freed by PyObject_Free / PyObject_GC_Del.
pub extern fn _PyObject_New(tp: *TypeObject) ?*Object;
pub extern fn _PyObject_GC_New(tp: *TypeObject) ?*Object;
pub extern fn PyObject_Free(p: ?*anyopaque) void;
pub extern fn PyObject_GC_Del(o: *anyopaque) void;
pub extern fn PyObject_GC_Track(o: *anyopaque) void;
pub extern fn PyWeakref_NewRef(o: *Object, callback: ?*Object) ?*Object;
pub extern fn PyType_GetFlags(t: *TypeObject) c_ulong;
pub extern fn PyType_IsSubtype(a: *TypeObject, b: *TypeObject) c_int;
pub extern fn PyType_FromSpec(spec: *const TypeSpec) ?*Object;
/// A heap type that knows its module (PyType_GetModuleState): it holds a strong reference to it.
pub extern fn PyType_FromModuleAndSpec(module: *Object, spec: *const TypeSpec, bases: ?*Object) ?*Object;
pub extern fn PyType_GetModuleState(t: *TypeObject) ?*anyopaque;
pub extern fn PyType_GetSlot(t: *TypeObject, slot: c_int) ?*anyopaque;
/// C's wchar_t: UTF-16 code units on Windows, UTF-32 elsewhere.
pub const WChar = if (builtin.os.tag == .windows) u16 else u32;
pub extern fn PyUnicode_AsWideCharString(o: *Object, size: ?*isize) ?[*:0]WChar;
pub extern fn PyUnicode_FromWideChar(w: [*]const WChar, size: isize) ?*Object;
pub extern fn PyMem_Free(p: ?*anyopaque) void;
pub extern fn PyCapsule_New(pointer: *anyopaque, name: [*:0]const u8, destructor: ?*const fn (*Object) callconv(.c) void) ?*Object;
pub extern fn PyCapsule_GetPointer(capsule: *Object, name: [*:0]const u8) ?*anyopaque;
pub extern fn PyCapsule_SetContext(capsule: *Object, context: ?*anyopaque) c_int;
pub extern fn PyCapsule_GetContext(capsule: *Object) ?*anyopaque;
pub extern fn PyObject_GetAttrString(o: *Object, name: [*:0]const u8) ?*Object;
pub extern fn PySequence_Check(o: *Object) c_int;
pub extern fn PySequence_Size(o: *Object) isize;
pub extern fn PySequence_GetItem(o: *Object, i: isize) ?*Object;

// Numbers, strings, tuples.
pub extern fn PyLong_FromLong(v: c_long) ?*Object;
pub extern fn PyLong_FromUnsignedLongLong(v: c_ulonglong) ?*Object;
pub extern fn PyLong_FromSsize_t(v: isize) ?*Object;
pub extern fn PyLong_AsLong(o: *Object) c_long;
pub extern fn PyLong_AsLongLong(o: *Object) c_longlong;
pub extern fn PyLong_AsUnsignedLongLong(o: *Object) c_ulonglong;
pub extern fn PyLong_AsUnsignedLongLongMask(o: *Object) c_ulonglong;
pub extern fn PyLong_AsSsize_t(o: *Object) isize;
pub extern fn PyNumber_Index(o: *Object) ?*Object;
pub extern fn PyIndex_Check(o: *Object) c_int;
pub extern fn PyFloat_AsDouble(o: *Object) f64;
pub extern fn PyFloat_FromDouble(v: f64) ?*Object;
pub extern fn PyUnicode_FromString(s: [*:0]const u8) ?*Object;
pub extern fn PyUnicode_FromFormat(fmt: [*:0]const u8, ...) ?*Object;
pub extern fn PyUnicode_AsUTF8AndSize(o: *Object, size: ?*isize) ?[*:0]const u8;
pub extern fn PyUnicode_AsEncodedString(o: *Object, encoding: [*:0]const u8, errors: [*:0]const u8) ?*Object;
pub extern fn PyUnicode_DecodeFSDefault(s: [*:0]const u8) ?*Object;
pub extern fn PyBytes_AsString(o: *Object) ?[*]const u8;
pub extern fn PyBytes_Size(o: *Object) isize;
pub extern fn PyUnicode_InternFromString(s: [*:0]const u8) ?*Object;
pub extern fn PyUnicode_CompareWithASCIIString(o: *Object, s: [*:0]const u8) c_int;
pub extern fn PyTuple_New(n: isize) ?*Object;
pub extern fn PyTuple_Size(o: *Object) isize;
pub extern fn PyTuple_GetItem(o: *Object, i: isize) ?*Object;
pub extern fn PyTuple_Pack(n: isize, ...) ?*Object;

// Errors.
pub extern fn PyErr_SetString(t: *Object, msg: [*:0]const u8) void;
pub extern fn PyErr_Format(t: *Object, fmt: [*:0]const u8, ...) ?*Object;
pub extern fn PyErr_SetNone(t: *Object) void;
pub extern fn PyErr_NoMemory() ?*Object;
pub extern fn PyErr_Occurred() ?*Object;
pub extern fn PyErr_ExceptionMatches(t: *Object) c_int;
pub extern fn PyErr_Clear() void;
pub extern fn PyErr_Restore(t: ?*Object, v: ?*Object, tb: ?*Object) void;
pub extern fn PyErr_Fetch(t: *?*Object, v: *?*Object, tb: *?*Object) void;
pub extern fn PyErr_NormalizeException(t: *?*Object, v: *?*Object, tb: *?*Object) void;
pub extern fn PyErr_WriteUnraisable(o: ?*Object) void;
pub extern fn PyErr_SetInterruptEx(signum: c_int) c_int;
pub extern fn Py_IsInitialized() c_int;
pub extern fn PyException_SetTraceback(e: *Object, tb: *Object) c_int;

// Interpreter, threads and the GIL.
pub extern fn Py_GetVersion() [*:0]const u8;
pub extern fn Py_MakePendingCalls() c_int;
pub extern fn PyEval_SaveThread() ?*ThreadState;
pub extern fn PyEval_RestoreThread(t: ?*ThreadState) void;
pub extern fn PyEval_AcquireThread(t: *ThreadState) void;
pub extern fn PyEval_ReleaseThread(t: *ThreadState) void;
pub extern fn PyThreadState_Get() *ThreadState;
pub extern fn PyThreadState_GetInterpreter(t: *ThreadState) *InterpreterState;
pub extern fn PyThreadState_New(i: *InterpreterState) ?*ThreadState;
/// PyGILState_STATE is a C enum: PyGILState_LOCKED = 0, PyGILState_UNLOCKED = 1.
pub const gilstate_unlocked: c_int = 1;
pub extern fn PyGILState_Release(state: c_int) void;
pub extern fn PySys_GetObject(name: [*:0]const u8) ?*Object;
pub extern fn PyThreadState_GetDict() ?*Object;
pub extern fn PyInterpreterState_GetID(i: *InterpreterState) i64;

/// Whether the running interpreter has a GIL: always in abi3; in the free-threaded ABIs and abi3t, what
/// `sys._is_gil_enabled()` says now (PYTHON_GIL=1 turns it on, and so may importing a module that needs it
/// later). False if it cannot be asked (no exception is left set). Call with an attached thread state.
pub fn gilEnabled() bool {
    if (!free_threaded) return true;
    const f = sysAttr("_is_gil_enabled") orelse return false;
    defer decRef(f);
    const result = PyObject_CallFunctionObjArgs(f, @as(?*Object, null)) orelse {
        PyErr_Clear();
        return false;
    };
    defer decRef(result);
    return result == trueObject();
}

// Modules.
pub extern fn PyImport_ImportModule(name: [*:0]const u8) ?*Object;
pub extern fn PyModuleDef_Init(def: *ModuleDef) ?*Object;
pub extern fn PyModule_AddObjectRef(m: *Object, name: [*:0]const u8, v: *Object) c_int;
pub extern fn PyModule_GetState(m: *Object) ?*anyopaque;
pub const VisitProc = *const fn (o: *Object, arg: ?*anyopaque) callconv(.c) c_int;
pub extern fn PyDict_Size(d: *Object) isize;
pub extern fn PyDict_New() ?*Object;
pub extern fn PyDict_SetItemString(d: *Object, key: [*:0]const u8, v: *Object) c_int;
pub extern fn PyDict_GetItemWithError(d: *Object, key: *Object) ?*Object;
pub extern fn PyDict_SetItem(d: *Object, key: *Object, v: *Object) c_int;
pub extern fn PyDict_DelItem(d: *Object, key: *Object) c_int;
pub extern fn PyDict_Next(d: *Object, pos: *isize, key: ?*?*Object, value: ?*?*Object) c_int;
pub extern fn PySys_SetObject(name: [*:0]const u8, v: ?*Object) c_int;
pub extern fn PyCFunction_NewEx(def: *MethodDef, self: ?*Object, module: ?*Object) ?*Object;

// Data.
pub extern var PyFloat_Type: TypeObject;
pub extern var PyBaseObject_Type: TypeObject;
pub extern var PyExc_RuntimeError: *Object;
pub extern var PyExc_ValueError: *Object;
pub extern var PyExc_TypeError: *Object;
pub extern var PyExc_OverflowError: *Object;
pub extern var PyExc_SystemExit: *Object;
pub extern var PyExc_SystemError: *Object;
pub extern var PyExc_OSError: *Object;
pub extern var PyExc_AttributeError: *Object;

// Declarations for some of the ABIs. tests/test_toolchain.py reads them by block: `not_abi3t` is in python3.def
// and free_threaded.def, `only_cp3xt` in free_threaded.def, `no_gil` in free_threaded.def and python3t.def,
// `only_abi3t` in python3t.def.

/// What touches the object's layout (its header's size and fields): every ABI but abi3t.
pub const not_abi3t = struct {
    pub extern fn _Py_Dealloc(o: *Object) void;
    pub extern var _Py_NoneStruct: Object;
    pub extern var _Py_TrueStruct: Object;
    pub extern var _Py_FalseStruct: Object;
};

/// What free-threaded CPython's own ABIs (cp313t, cp314t) have and the stable ABIs lack.
pub const only_cp3xt = struct {
    pub extern fn PyErr_FormatUnraisable(fmt: [*:0]const u8, ...) void;
    pub extern fn _PyObject_GenericGetAttrWithDict(o: *Object, name: *Object, dict: ?*Object, suppress: c_int) ?*Object;
    pub extern fn _PyObject_GenericSetAttrWithDict(o: *Object, name: *Object, v: ?*Object, dict: ?*Object) c_int;
};

/// What running without a GIL needs, in the free-threaded ABIs and in abi3t (whose 3.15 stable ABI has them).
pub const no_gil = struct {
    pub extern fn PyDict_GetItemRef(d: *Object, key: *Object, result: *?*Object) c_int;
    pub extern fn PyCriticalSection_Begin(c: *CriticalSection, o: *Object) void;
    pub extern fn PyCriticalSection_End(c: *CriticalSection) void;
};

/// What abi3t uses in place of the object's layout (3.15's stable ABI).
pub const only_abi3t = struct {
    pub extern fn Py_TYPE(o: *Object) *TypeObject;
    pub extern fn Py_GetConstantBorrowed(id: c_uint) *Object;
    pub extern fn PyObject_GetTypeData(o: *Object, cls: *TypeObject) ?*anyopaque;
};

/// Include/critical_section.h's PyCriticalSection (free-threaded builds, and 3.15's stable ABI).
pub const CriticalSection = extern struct { prev: usize, mutex: ?*anyopaque };

/// `Py_BEGIN_CRITICAL_SECTION(o)` ... `Py_END_CRITICAL_SECTION()`: excludes other threads from what the GIL
/// excludes them from, for C state that hangs off a Python object and that several threads may touch. With a
/// GIL (abi3) it is nothing; without (cp313t, cp314t) it holds the object's own mutex, which CPython releases if the
/// thread blocks or detaches (so it cannot deadlock with a stop-the-world). Keep the section free of waits.
/// CPython links the section into the thread's list by its address: it must stay where `begin` put it.
///
///     var section: abi.Section = undefined;
///     section.begin(o);
///     defer section.end();
pub const Section = struct {
    cs: if (free_threaded) CriticalSection else void,

    pub inline fn begin(self: *Section, o: *Object) void {
        if (free_threaded) no_gil.PyCriticalSection_Begin(&self.cs, o);
    }

    pub inline fn end(self: *Section) void {
        if (free_threaded) no_gil.PyCriticalSection_End(&self.cs);
    }
};

// ---- Operations whose means differ between the ABIs ----

/// `d[key]` as a new reference in `result`: 1 found, 0 missing, -1 with an exception set. Without a GIL a
/// borrowed item could be freed by another thread at once, so a free-threaded build asks for a strong one.
pub fn dictGetItemRef(d: *Object, key: *Object, result: *?*Object) c_int {
    if (free_threaded) return no_gil.PyDict_GetItemRef(d, key, result);
    const v = PyDict_GetItemWithError(d, key) orelse {
        result.* = null;
        return if (PyErr_Occurred() != null) -1 else 0;
    };
    result.* = newRef(v);
    return 1;
}

/// The generic attribute lookup of `o` (its type's MRO, descriptors) with `dict` as its instance dict, for
/// `_local`, whose instance dict is the calling thread's. cp313t and cp314t call CPython's own. The stable ABIs
/// have no such call: there `o`'s dict slot (`dict_slot`, its tp_dictoffset field) points at `dict` for the one
/// call, which the GIL (abi3), or the object's critical section (abi3t, no GIL: CPython suspends it if the
/// call blocks, and the thread that enters then restores the slot before it leaves), keeps other threads from
/// seeing; nested calls (a property reading another attribute) save and restore it in turn.
pub fn genericGetAttrWithDict(o: *Object, name: *Object, dict: *Object, dict_slot: *?*Object) ?*Object {
    if (has_generic_with_dict) return only_cp3xt._PyObject_GenericGetAttrWithDict(o, name, dict, 0);
    var section: Section = undefined;
    section.begin(o);
    defer section.end();
    const saved = swapDict(dict_slot, dict);
    defer restoreDict(dict_slot, saved);
    return PyObject_GenericGetAttr(o, name);
}

/// As `genericGetAttrWithDict`, for setting (`value`) or deleting (null) an attribute.
pub fn genericSetAttrWithDict(o: *Object, name: *Object, value: ?*Object, dict: *Object, dict_slot: *?*Object) c_int {
    if (has_generic_with_dict) return only_cp3xt._PyObject_GenericSetAttrWithDict(o, name, value, dict);
    var section: Section = undefined;
    section.begin(o);
    defer section.end();
    const saved = swapDict(dict_slot, dict);
    defer restoreDict(dict_slot, saved);
    return PyObject_GenericSetAttr(o, name, value);
}

const has_generic_with_dict = switch (target_abi) {
    .cp313t, .cp314t => true,
    .abi3, .abi3t => false,
};

fn swapDict(slot: *?*Object, dict: *Object) ?*Object {
    const saved = slot.*;
    slot.* = newRef(dict);
    return saved;
}

fn restoreDict(slot: *?*Object, saved: ?*Object) void {
    const current = slot.*;
    slot.* = saved;
    xDecRef(current);
}

/// `sys.<name>` as a new reference, or null (with no exception) if sys has no such attribute. Read from the
/// interpreter's own sys dict, which is still there while the interpreter finalizes (a `__del__` that starts a
/// thread then must be refused: `sys.is_finalizing()`), when `sys.modules` may be gone. 3.13t has no strong-
/// reference call for it (`PySys_GetAttr` is 3.14+); the reference is taken at once, and the attributes read
/// (`is_finalizing`, `getfilesystemencoding`, `unraisablehook`) are replaced by nothing but user code.
pub fn sysAttr(name: [*:0]const u8) ?*Object {
    return newRef(PySys_GetObject(name) orelse return null);
}

/// PyErr_FormatUnraisable where the ABI has it (cp313t, cp314t): the hook gets `err_msg` formatted and `object` None,
/// with no Python code run on the way. The stable ABI has no call that sets `err_msg` (errors.zig builds the
/// hook's arguments itself).
pub const formatUnraisable: ?*const fn ([*:0]const u8, ...) callconv(.c) void = if (has_generic_with_dict) &only_cp3xt.PyErr_FormatUnraisable else null;

// Helpers for what Python.h spells as macros.

/// abi3: Py_INCREF and Py_DECREF as CPython 3.12+'s headers compile them for a 64-bit build: a plain add,
/// except that an immortal object's count is never written (3.10 and 3.11 have none: `objects_immortal`).
/// The pre-3.12 stable ABI's plain add on an immortal count raced CPython in parallel isolated interpreters
/// and freed a static object (docs/DESIGN.md, "Immortal objects are shared").
/// Built with -Dref-calls (for CPython debug builds' reference totals), and without a GIL (the count is split
/// between the owning thread's and a shared atomic one), both go through the interpreter's own functions.
pub inline fn incRef(o: *Object) void {
    if (ref_calls) return Py_IncRef(o);
    if (isImmortal(o)) return;
    o.ob_refcnt += 1;
}

pub inline fn decRef(o: *Object) void {
    if (ref_calls) return Py_DecRef(o);
    if (isImmortal(o)) return;
    o.ob_refcnt -= 1;
    if (o.ob_refcnt == 0) not_abi3t._Py_Dealloc(o);
}

/// CPython 3.12+'s `_Py_IsImmortal` for 64-bit builds (3.12-3.15: the count's low 32 bits, read as an int32,
/// are negative). Only for the abi3 build, whose object header has the count.
inline fn isImmortal(o: *const Object) bool {
    comptime std.debug.assert(@sizeOf(usize) == 8); // the wheels are 64-bit only; 32-bit CPython marks immortals otherwise
    return immortal() and @as(i32, @truncate(o.ob_refcnt)) < 0;
}

const ref_calls = @import("build_options").ref_calls or free_threaded;

pub inline fn xDecRef(o: ?*Object) void {
    if (o) |p| decRef(p);
}

pub inline fn newRef(o: *Object) *Object {
    incRef(o);
    return o;
}

/// True on 3.12+, where CPython has immortal objects (PEP 683), None, True and False among them: returning
/// one needs no new reference (CPython's own Py_RETURN_TRUE takes none), and leaving the count alone keeps
/// every thread that returns True from writing to the same cache line; and `incRef`/`decRef` never write an
/// immortal object's count. Set once at module init (version.detect), before any reference is taken. Every
/// build but abi3 runs on 3.13+ only, and knows it at compile time (`immortal`): the hot methods' returns of
/// True and None are then a load, with no flag to test and no branch to Py_IncRef.
pub var objects_immortal = false;

inline fn immortal() bool {
    return target_abi != .abi3 or objects_immortal;
}

pub inline fn none() *Object {
    if (immortal()) return noneObject();
    return newRef(noneObject());
}

pub inline fn boolean(v: bool) *Object {
    const o = if (v) trueObject() else falseObject();
    if (immortal()) return o;
    return newRef(o);
}

/// None, True and False themselves (borrowed: for comparisons). abi3t asks the interpreter once (`initConstants`):
/// the singletons are static objects, the same in every interpreter of the process.
pub inline fn noneObject() *Object {
    if (opaque_objects) return constant(0);
    return &not_abi3t._Py_NoneStruct;
}

pub inline fn trueObject() *Object {
    if (opaque_objects) return constant(2);
    return &not_abi3t._Py_TrueStruct;
}

pub inline fn falseObject() *Object {
    if (opaque_objects) return constant(1);
    return &not_abi3t._Py_FalseStruct;
}

/// abi3t: constant `id` (Py_CONSTANT_*), unchecked: `initConstants` set it before any of zthread's objects or
/// functions existed.
inline fn constant(comptime id: usize) *Object {
    @setRuntimeSafety(false);
    return constants[id].load(.monotonic).?;
}

/// Py_CONSTANT_NONE, Py_CONSTANT_FALSE, Py_CONSTANT_TRUE (abi3t).
var constants = [3]std.atomic.Value(?*Object){ .init(null), .init(null), .init(null) };

/// Called by the module's exec before anything else (every interpreter; each stores the same values).
pub fn initConstants() void {
    if (!opaque_objects) return;
    for (&constants, 0..) |*c, id| c.store(only_abi3t.Py_GetConstantBorrowed(@intCast(id)), .monotonic);
}

// ---- Instances: the object header, then the type's own fields ----

/// The type of `o` (Py_TYPE).
pub inline fn typeOf(o: *const Object) *TypeObject {
    if (opaque_objects) return only_abi3t.Py_TYPE(@constCast(o));
    return o.ob_type;
}

/// abi3t: where an instance's own fields start, from the object's address: the header's size, aligned, of the
/// running interpreter (16 bytes with the GIL, 32 without, on 64-bit platforms today). Learned once from an
/// instance (`learnDataOffset`); the same for every type of zthread's (each is based on `object`) and their
/// Python subclasses, in every interpreter of the process.
var data_offset = std.atomic.Value(usize).init(0);

inline fn dataOffset() usize {
    if (opaque_objects) return data_offset.load(.monotonic);
    return @sizeOf(Object);
}

/// The fields (`T`, an extern struct) of `o`, an instance of one of zthread's types or of a Python subclass.
/// No safety checks: `o` is an object the interpreter handed over, so its address plus the header's size neither
/// overflows nor is 0, and the allocator aligned it (these are the instructions of every method's fast path).
pub inline fn data(comptime T: type, o: *const Object) *T {
    @setRuntimeSafety(false);
    if (!opaque_objects) comptime std.debug.assert(@sizeOf(Object) % @alignOf(T) == 0);
    return @ptrFromInt(@intFromPtr(o) + dataOffset());
}

/// The object whose fields `fields` are (`data`'s inverse).
pub inline fn object(fields: anytype) *Object {
    @setRuntimeSafety(false); // `data`'s inverse, for fields `data` found
    return @ptrFromInt(@intFromPtr(fields) - dataOffset());
}

/// The TypeSpec's basicsize for instances with fields `T`: the header and `T` (the header's layout known), or
/// `-@sizeOf(T)`, "the base's size, and this much" (PEP 697; abi3t).
pub fn basicsize(comptime T: type) c_int {
    if (opaque_objects) return -@as(c_int, @sizeOf(T));
    return @sizeOf(Object) + @sizeOf(T);
}

/// A read-only Py_ssize_t member naming the offset of `T.field` (`__weaklistoffset__`, `__dictoffset__`):
/// from the object, or from the type's own data (Py_RELATIVE_OFFSET, with `basicsize`'s negative size).
pub fn offsetMember(comptime name: [*:0]const u8, comptime T: type, comptime field: []const u8) MemberDef {
    return .{
        .name = name,
        .type = T_PYSSIZET,
        .offset = if (opaque_objects) @offsetOf(T, field) else @sizeOf(Object) + @offsetOf(T, field),
        .flags = READONLY | if (opaque_objects) Py_RELATIVE_OFFSET else 0,
        .doc = null,
    };
}

/// abi3t: learns `data_offset` from a new instance of `tp` (which must be one of zthread's types), before any
/// instance's fields are used; a no-op elsewhere. False with an exception set.
pub fn learnDataOffset(tp: *TypeObject) bool {
    if (!opaque_objects) return true;
    const probe = allocViaSlot(tp) orelse return false; // zero-filled: its tp_dealloc runs on nothing
    const fields = only_abi3t.PyObject_GetTypeData(probe, tp) orelse {
        decRef(probe);
        return false;
    };
    data_offset.store(@intFromPtr(fields) - @intFromPtr(probe), .monotonic);
    decRef(probe);
    return true;
}

/// A type slot as the function type it holds (function pointers are 4-byte aligned on arm64).
pub inline fn slotFn(comptime F: type, tp: *TypeObject, slot: c_int) F {
    return @ptrCast(@alignCast(PyType_GetSlot(tp, slot).?));
}

/// A new instance of the non-subclassable heap type `tp` (its fields, which the caller sets: `data`): the
/// cheap path `allocate_lock()` and friends take. `tracked` must be what `tp`'s `instanceSpec` said: tracked by
/// the garbage collector (at once: its tp_traverse reads nothing but the header), or from the object allocator.
/// (Asking the type, PyType_GetFlags, would cost an `allocate_lock()` about 6 ns: the caller knows from its module
/// state.) Sized by the type (`_PyObject_New`, `_PyObject_GC_New`: the calls behind PyObject_New and
/// PyObject_GC_New), so abi3t, which cannot size the object, takes the same path.
pub fn newInstance(tp: *TypeObject, tracked: bool) ?*Object {
    if (tracked) {
        const o = _PyObject_GC_New(tp) orelse return null; // MemoryError set
        PyObject_GC_Track(o);
        return o;
    }
    return _PyObject_New(tp);
}

/// The end of a `newInstance` object's tp_dealloc (each variant of the type has its own tp_dealloc):
/// instances of a heap type own a reference to it.
pub fn freeInstance(o: *Object, comptime tracked: bool) void {
    const tp = typeOf(o);
    if (tracked) {
        PyObject_GC_UnTrack(o);
        PyObject_GC_Del(o);
    } else {
        PyObject_Free(o);
    }
    decRef(typeObject(tp));
}

/// The spec of a type whose instances reference nothing but their type, in one of two variants: `tracked` by
/// the garbage collector (`traverseType` visits the type) or not. `dealloc(tracked)` is the variant's tp_dealloc
/// (it ends with `freeInstance(o, tracked)`, or for a subclassable type, RLock, with `freeViaSlot`); the other
/// slots are `slots`. A Python subclass of either variant is a GC type of its own (every class statement makes
/// one), whose instances its own traverse covers, the type and what the subclass adds.
///
/// Why a tracked variant, although such an instance references nothing else: an instance of a heap type holds
/// its type, and a type is freed only by a collection (it refers to itself through its MRO). An untracked
/// instance hides that reference from the collector, so one freed during an interpreter's last collection (a
/// module dict cleared there) drops its type's last reference after the collector has judged the type alive:
/// the type and its module leak, and a closed subinterpreter's memory arenas with them. CPython's own `_thread`
/// objects are tracked. zthread tracks them in subinterpreters, and leaves them untracked in the main
/// interpreter, which is finalized only when the process ends: there an untracked lock is cheaper to make
/// (no collector bookkeeping) and 16 bytes smaller, and nothing outlives the process to be leaked.
pub fn instanceSpec(
    comptime name: [*:0]const u8,
    comptime T: type,
    comptime flags: c_ulong,
    comptime dealloc: fn (comptime bool) fn (*Object) callconv(.c) void,
    comptime slots: []const TypeSlot,
    comptime tracked: bool,
) TypeSpec {
    const head = [_]TypeSlot{.{ .slot = Py_tp_dealloc, .pfunc = @ptrCast(&dealloc(tracked)) }};
    const gc = [_]TypeSlot{.{ .slot = Py_tp_traverse, .pfunc = @ptrCast(&traverseType) }};
    const end = [_]TypeSlot{.{ .slot = 0, .pfunc = null }};
    const all = head ++ slots ++ (if (tracked) gc else [0]TypeSlot{}) ++ end;
    return .{
        .name = name,
        .basicsize = basicsize(T),
        .itemsize = 0,
        .flags = @intCast(flags | if (tracked) Py_TPFLAGS_HAVE_GC else 0),
        .slots = all,
    };
}

/// Which variant (abi.instanceSpec) of the type whose tp_dealloc is `dealloc(_)` `tp` is, told by its
/// tp_dealloc (one slot read); `other`: another type, or a Python subclass of either variant.
pub const InstanceKind = enum { untracked, tracked, other };

pub fn instanceKind(tp: *TypeObject, comptime dealloc: fn (comptime bool) fn (*Object) callconv(.c) void) InstanceKind {
    const d = PyType_GetSlot(tp, Py_tp_dealloc);
    if (d == @as(?*anyopaque, @constCast(&dealloc(false)))) return .untracked;
    if (d == @as(?*anyopaque, @constCast(&dealloc(true)))) return .tracked;
    return .other;
}

/// True if `tp` is one of the two variants (abi.instanceSpec) of the type whose tp_dealloc is `dealloc(_)`.
pub fn isInstanceType(tp: *TypeObject, comptime dealloc: fn (comptime bool) fn (*Object) callconv(.c) void) bool {
    return instanceKind(tp, dealloc) != .other;
}

/// tp_traverse of a type whose instances reference nothing but their type (which every instance of a heap
/// type must visit, 3.9+; for a Python subclass this is its own type).
pub fn traverseType(o: *Object, visit: VisitProc, arg: ?*anyopaque) callconv(.c) c_int {
    return visit(typeObject(typeOf(o)), arg);
}

/// An instance of `tp` or of a Python subclass of it (which may add a __dict__ and the GC): tp_alloc.
pub fn allocViaSlot(tp: *TypeObject) ?*Object {
    const alloc = slotFn(*const fn (*TypeObject, isize) callconv(.c) ?*Object, tp, Py_tp_alloc);
    return alloc(tp, 0);
}

/// The end of an `allocViaSlot` object's tp_dealloc (also reached from a subclass's subtype_dealloc).
pub fn freeViaSlot(o: *Object) void {
    const tp = typeOf(o);
    const free = slotFn(*const fn (?*anyopaque) callconv(.c) void, tp, Py_tp_free);
    free(o);
    decRef(typeObject(tp));
}

/// True if `tp` is the type whose tp_dealloc is `dealloc` itself, not a Python subclass of it (whose
/// tp_dealloc is subtype_dealloc). Works across interpreters, each of which has its own type object.
pub fn isExactType(tp: *TypeObject, dealloc: *const anyopaque) bool {
    return PyType_GetSlot(tp, Py_tp_dealloc) == @as(?*anyopaque, @constCast(dealloc));
}

pub inline fn typeObject(tp: *TypeObject) *Object {
    return @ptrCast(@alignCast(tp));
}

pub inline fn hasFlag(o: *const Object, flag: c_ulong) bool {
    return PyType_GetFlags(typeOf(o)) & flag != 0;
}

pub inline fn isFloat(o: *Object) bool {
    const tp = typeOf(o);
    return tp == &PyFloat_Type or PyType_IsSubtype(tp, &PyFloat_Type) != 0;
}

pub inline fn isLong(o: *const Object) bool {
    return hasFlag(o, Py_TPFLAGS_LONG_SUBCLASS);
}

pub inline fn isTuple(o: *const Object) bool {
    return hasFlag(o, Py_TPFLAGS_TUPLE_SUBCLASS);
}

pub inline fn isBytes(o: *const Object) bool {
    return hasFlag(o, Py_TPFLAGS_BYTES_SUBCLASS);
}

pub inline fn isUnicode(o: *const Object) bool {
    return hasFlag(o, Py_TPFLAGS_UNICODE_SUBCLASS);
}

pub inline fn isDict(o: *const Object) bool {
    return hasFlag(o, Py_TPFLAGS_DICT_SUBCLASS);
}

/// PyVectorcall_NARGS: the count without PY_VECTORCALL_ARGUMENTS_OFFSET.
pub inline fn vectorcallNargs(nargsf: usize) isize {
    return @intCast(nargsf & ~(@as(usize, 1) << (@bitSizeOf(usize) - 1)));
}
