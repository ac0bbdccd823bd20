//! `_thread._local` (`threading.local`): an object whose attributes are per thread.
//!
//! Ownership mirrors CPython's `_threadmodule.c`, with one change that keeps it in the stable ABI
//! (which cannot walk other threads' states):
//! - each thread has one Registry, held by its thread-state dict, mapping a local's key to that local's
//!   dict for the thread (borrowed pointers, in a Zig hash map);
//! - each local owns its per-thread dicts, keyed by weak references to the registries. When a thread
//!   ends its Registry dies and the weak reference's callback drops the local's dict for it; when a
//!   local dies it removes its key from every live registry it has a dict in.
//! So a thread's data dies with the thread or with the local, whichever goes first, and a cycle through a
//! local's own attributes stays collectable (the thread holds no strong reference to the dicts).
const std = @import("std");
const abi = @import("abi.zig");
const args = @import("args.zig");
const errors = @import("errors.zig");
const state = @import("state.zig");
const version = @import("version.zig");

const Object = abi.Object;
const Map = std.AutoHashMapUnmanaged(u64, *Object);

/// A local's fields, after its object header (abi.data).
const LocalObject = extern struct {
    /// Unique for the life of the process (never an address, which could be reused).
    key: u64,
    /// The state of the module whose `_local` this is or derives from, found once in `tp_new`: every attribute
    /// access needs it (state.zig says why it outlives the instance).
    state: *state.State,
    /// True for `_local` itself, false for subclasses (which need the generic attribute lookup).
    is_exact: bool,
    /// Arguments of the constructor, replayed to `__init__` in each new thread.
    init_args: ?*Object,
    init_kwargs: ?*Object,
    /// {weakref(registry, on_registry_death): dict of this local in that registry's thread}
    dicts: ?*Object,
    /// Bound to a weak reference to this local, so the callback does not keep it alive.
    on_registry_death: ?*Object,
    /// The tp_dictoffset slot: in the stable ABIs (abi3, abi3t), the calling thread's dict during a generic
    /// attribute call (abi.genericGetAttrWithDict). Otherwise null, or a dict that CPython's generic code made for the object when called on it directly (3.13+
    /// `object.__setattr__(local, ...)`): CPython's subclasses have such a per-object dict of their own.
    dict: ?*Object,
    weakreflist: ?*Object,
};

/// A registry's fields, after its object header (abi.data).
const Registry = extern struct {
    map: ?*Map,
    weakreflist: ?*Object,
};

var next_key = std.atomic.Value(u64).init(1);

inline fn cast(o: *Object) *LocalObject {
    return abi.data(LocalObject, o);
}

inline fn castRegistry(o: *Object) *Registry {
    return abi.data(Registry, o);
}

// ---- per-thread registries ----

/// tp_dealloc of the registry type's variant whose registries are `tracked` by the GC or not.
fn registryDealloc(comptime tracked: bool) fn (*Object) callconv(.c) void {
    return struct {
        fn dealloc(o: *Object) callconv(.c) void {
            const self = castRegistry(o);
            // First let every local drop its dict for this thread (weak reference callbacks), then forget them.
            if (self.weakreflist != null) abi.PyObject_ClearWeakRefs(o);
            if (self.map) |m| {
                m.deinit(std.heap.c_allocator);
                std.heap.c_allocator.destroy(m);
            }
            abi.freeInstance(o, tracked);
        }
    }.dealloc;
}

var registry_members = [_]abi.MemberDef{
    abi.offsetMember("__weaklistoffset__", Registry, "weakreflist"),
    .{ .name = null, .type = 0, .offset = 0, .flags = 0, .doc = null },
};
const registry_slots = [_]abi.TypeSlot{
    .{ .slot = abi.Py_tp_members, .pfunc = @ptrCast(&registry_members) },
};
const registry_flags = abi.Py_TPFLAGS_DEFAULT | abi.Py_TPFLAGS_DISALLOW_INSTANTIATION;
/// [tracked]
const registry_specs = [2]abi.TypeSpec{
    abi.instanceSpec("_thread._localregistry", Registry, registry_flags, registryDealloc, &registry_slots, false),
    abi.instanceSpec("_thread._localregistry", Registry, registry_flags, registryDealloc, &registry_slots, true),
};

/// The calling thread's registry (borrowed: its thread-state dict owns it), created on first use. A thread
/// state belongs to one interpreter, so its registry does too. Only this thread reads or writes its
/// thread-state dict, so the borrowed reference stays good (without a GIL too).
fn currentRegistry(s: *const state.State) ?*Registry {
    const tdict = abi.PyThreadState_GetDict() orelse {
        abi.PyErr_SetString(abi.PyExc_SystemError, "Couldn't get thread-state dictionary");
        return null;
    };
    if (abi.PyDict_GetItemWithError(tdict, s.local_registry_key.?)) |r| return castRegistry(r);
    if (abi.PyErr_Occurred() != null) return null;
    const o = abi.newInstance(@ptrCast(s.local_registry_type.?), s.tracked) orelse return null;
    const self = castRegistry(o);
    self.map = null;
    self.weakreflist = null;
    defer abi.decRef(o);
    if (abi.PyDict_SetItem(tdict, s.local_registry_key.?, o) != 0) return null;
    return self;
}

/// A registry's map is its thread's, but a local that dies in another thread removes its key from it: every
/// access is a critical section on the registry (nothing with a GIL; the registry's own mutex without).
fn lookup(registry: *Registry, key: u64) ?*Object {
    var section: abi.Section = undefined;
    section.begin(abi.object(registry));
    defer section.end();
    const m = registry.map orelse return null;
    return m.get(key);
}

fn insert(registry: *Registry, key: u64, ldict: *Object) std.mem.Allocator.Error!void {
    var section: abi.Section = undefined;
    section.begin(abi.object(registry));
    defer section.end();
    const map = registry.map orelse blk: {
        const m = try std.heap.c_allocator.create(Map);
        m.* = .empty;
        registry.map = m;
        break :blk m;
    };
    try map.put(std.heap.c_allocator, key, ldict);
}

fn forget(registry: *Registry, key: u64) void {
    var section: abi.Section = undefined;
    section.begin(abi.object(registry));
    defer section.end();
    if (registry.map) |m| _ = m.remove(key);
}

// ---- the local's dict for the calling thread ----

/// The calling thread's dict of `self` (borrowed), created and initialised on first use in a thread.
fn localDict(self: *LocalObject) ?*Object {
    const registry = currentRegistry(self.state) orelse return null;
    if (lookup(registry, self.key)) |d| return d;
    const ldict = createDict(self, registry) orelse return null;
    const o = abi.object(self);
    const tp = abi.typeOf(o);
    const init = abi.PyType_GetSlot(tp, abi.Py_tp_init);
    if (init != self.state.object_init) {
        const init_fn: *const fn (*Object, *Object, ?*Object) callconv(.c) c_int = @ptrCast(@alignCast(init.?));
        if (init_fn(o, self.init_args.?, self.init_kwargs) < 0) {
            // Forget the dict, so the next access in this thread tries __init__ again.
            removeDict(self, registry);
            return null;
        }
    }
    return ldict;
}

fn createDict(self: *LocalObject, registry: *Registry) ?*Object {
    const ldict = abi.PyDict_New() orelse return null;
    defer abi.decRef(ldict); // self.dicts holds it
    const wr = abi.PyWeakref_NewRef(abi.object(registry), self.on_registry_death) orelse return null;
    defer abi.decRef(wr);
    if (abi.PyDict_SetItem(self.dicts.?, wr, ldict) != 0) return null;
    insert(registry, self.key, ldict) catch {
        _ = abi.PyDict_DelItem(self.dicts.?, wr);
        return abi.PyErr_NoMemory();
    };
    return ldict;
}

fn removeDict(self: *LocalObject, registry: *Registry) void {
    const saved = errors.save();
    defer errors.restore(saved);
    forget(registry, self.key);
    const wr = abi.PyWeakref_NewRef(abi.object(registry), null) orelse return;
    defer abi.decRef(wr);
    if (abi.PyDict_DelItem(self.dicts.?, wr) != 0) abi.PyErr_Clear();
}

/// Weak reference callback, bound to a weak reference to the local: a registry died (its thread
/// ended), so drop the local's dict for that thread.
fn onRegistryDeath(local_ref: ?*Object, dead_ref: *Object) callconv(.c) ?*Object {
    const local = abi.PyObject_CallFunctionObjArgs(local_ref.?, @as(?*Object, null)) orelse return null;
    defer abi.decRef(local);
    if (local == abi.noneObject()) return abi.none();
    const dicts = cast(local).dicts orelse return abi.none();
    if (abi.PyDict_DelItem(dicts, dead_ref) != 0) abi.PyErr_Clear(); // already gone: nothing to do
    return abi.none();
}

var on_registry_death_def: abi.MethodDef = .{ .ml_name = "_localdummy_destroyed", .ml_meth = @ptrCast(&onRegistryDeath), .ml_flags = abi.METH_O, .ml_doc = null };

// ---- the type ----

/// Whether `tp` is this module's `_local` type itself (any interpreter's), not a Python subclass.
fn isExactType(tp: *abi.TypeObject) bool {
    return abi.isExactType(tp, &dealloc);
}

fn new(tp: *abi.TypeObject, init_args: *Object, init_kwargs: ?*Object) callconv(.c) ?*Object {
    const s = state.ofSubclass(tp, isExactType);
    if (abi.PyType_GetSlot(tp, abi.Py_tp_init) == s.object_init) {
        const has_kwargs = if (init_kwargs) |kw| abi.PyDict_Size(kw) != 0 else false;
        if (abi.PyTuple_Size(init_args) != 0 or has_kwargs) {
            abi.PyErr_SetString(abi.PyExc_TypeError, "Initialization arguments are not supported");
            return null;
        }
    }
    const o = abi.allocViaSlot(tp) orelse return null; // zero-filled
    const self = cast(o);
    self.key = next_key.fetchAdd(1, .monotonic);
    self.state = s;
    self.is_exact = isExactType(tp);
    self.init_args = abi.newRef(init_args);
    self.init_kwargs = if (init_kwargs) |kw| abi.newRef(kw) else null;
    if (!finishNew(self)) {
        abi.decRef(o);
        return null;
    }
    return o;
}

fn finishNew(self: *LocalObject) bool {
    self.dicts = abi.PyDict_New() orelse return false;
    const self_ref = abi.PyWeakref_NewRef(abi.object(self), null) orelse return false;
    defer abi.decRef(self_ref);
    self.on_registry_death = abi.PyCFunction_NewEx(&on_registry_death_def, self_ref, null) orelse return false;
    // The creating thread's dict, without __init__: the constructor call runs it right after.
    const registry = currentRegistry(self.state) orelse return false;
    return createDict(self, registry) != null;
}

fn forgetAllThreads(self: *LocalObject) void {
    const dicts = self.dicts orelse return;
    const saved = errors.save();
    defer errors.restore(saved);
    var pos: isize = 0;
    var wr: ?*Object = null;
    while (abi.PyDict_Next(dicts, &pos, &wr, null) != 0) {
        const registry = abi.PyObject_CallFunctionObjArgs(wr.?, @as(?*Object, null)) orelse {
            abi.PyErr_Clear();
            continue;
        };
        defer abi.decRef(registry);
        if (registry == abi.noneObject()) continue;
        forget(castRegistry(registry), self.key);
    }
}

fn clear(o: *Object) callconv(.c) c_int {
    const self = cast(o);
    forgetAllThreads(self);
    clearRef(&self.init_args);
    clearRef(&self.init_kwargs);
    clearRef(&self.dicts);
    clearRef(&self.on_registry_death);
    clearRef(&self.dict);
    return 0;
}

fn clearRef(slot: *?*Object) void {
    const old = slot.*;
    slot.* = null;
    abi.xDecRef(old);
}

fn traverse(o: *Object, visit: abi.VisitProc, arg: ?*anyopaque) callconv(.c) c_int {
    const self = cast(o);
    // Instances of a heap type reference it (3.9+).
    const refs = [_]?*Object{ abi.typeObject(abi.typeOf(o)), self.init_args, self.init_kwargs, self.dicts, self.on_registry_death, self.dict };
    for (refs) |r| if (r) |p| {
        const rc = visit(p, arg);
        if (rc != 0) return rc;
    };
    return 0;
}

fn dealloc(o: *Object) callconv(.c) void {
    const self = cast(o);
    abi.PyObject_GC_UnTrack(o);
    // Weak references first: code run below must not reach an object whose count is 0.
    if (self.weakreflist != null) abi.PyObject_ClearWeakRefs(o);
    _ = clear(o);
    abi.freeViaSlot(o);
}

/// Whether `name` is "__dict__": 1, 0, or -1 with an exception set. As CPython does, by value
/// (PyObject_RichCompareBool) and before anything checks that the name is a str, so a str subclass's
/// `__eq__` decides, and any object that compares equal to "__dict__" counts.
fn isDictName(self: *const LocalObject, name: *Object) c_int {
    return abi.PyObject_RichCompareBool(name, self.state.dict_name.?, abi.Py_EQ);
}

fn getattro(o: *Object, name: *Object) callconv(.c) ?*Object {
    const self = cast(o);
    const ldict = localDict(self) orelse return null;
    switch (isDictName(self, name)) {
        1 => return abi.newRef(ldict),
        0 => {},
        else => return null,
    }
    if (self.is_exact) {
        // No class attributes to honour first: look in the thread's dict directly.
        var v: ?*Object = null;
        switch (abi.dictGetItemRef(ldict, name, &v)) {
            1 => return v,
            0 => {},
            else => return null,
        }
    }
    return abi.genericGetAttrWithDict(o, name, ldict, &self.dict);
}

fn setattro(o: *Object, name: *Object, value: ?*Object) callconv(.c) c_int {
    const self = cast(o);
    const ldict = localDict(self) orelse return -1;
    switch (isDictName(self, name)) {
        1 => return dictIsReadOnly(self, name),
        0 => {},
        else => return -1,
    }
    return abi.genericSetAttrWithDict(o, name, value, ldict, &self.dict);
}

/// CPython's AttributeError for assigning or deleting `__dict__`: the type's name cut at 50 bytes
/// (3.10/3.11) or 100 (3.12+), the attribute's name by `repr` (3.13.1+) or as text in quotes (3.10-3.13.0,
/// `'%U'`). A name that only compares equal to "__dict__" and is not a str is also formatted by `repr`
/// on 3.10-3.13: their `'%U'` reads it as a str (3.10/3.11 print garbage, 3.12/3.13 crash), and `repr`
/// is what CPython chose when it mended that (docs/DESIGN.md, "`_local` and attribute names").
fn dictIsReadOnly(self: *LocalObject, name: *Object) c_int {
    const tp_name = args.instanceTypeName(abi.object(self), self.is_exact, spec.name) orelse return -1;
    defer abi.decRef(tp_name);
    const tp_name_utf8 = abi.PyUnicode_AsUTF8AndSize(tp_name, null) orelse return -1;
    // gh-127190 (repr) reached 3.13 in 3.13.1.
    const by_repr = version.atLeastMicro(13, 1) or !abi.isUnicode(name);
    if (version.atLeast(12)) readOnlyError("100", by_repr, tp_name_utf8, name) else readOnlyError("50", by_repr, tp_name_utf8, name);
    return -1;
}

fn readOnlyError(comptime cut: []const u8, by_repr: bool, tp_name: [*:0]const u8, name: *Object) void {
    const type_part = "'%." ++ cut ++ "s' object attribute ";
    if (by_repr) {
        // repr() first: 3.10's PyErr_Format would replace an error raised by %R with an empty AttributeError.
        const shown = abi.PyObject_Repr(name) orelse return;
        defer abi.decRef(shown);
        _ = abi.PyErr_Format(abi.PyExc_AttributeError, type_part ++ "%U is read-only", tp_name, shown);
    } else {
        _ = abi.PyErr_Format(abi.PyExc_AttributeError, type_part ++ "'%U' is read-only", tp_name, name);
    }
}

var members = [_]abi.MemberDef{
    abi.offsetMember("__weaklistoffset__", LocalObject, "weakreflist"),
    abi.offsetMember("__dictoffset__", LocalObject, "dict"),
    .{ .name = null, .type = 0, .offset = 0, .flags = 0, .doc = null },
};

var slots = [_]abi.TypeSlot{
    .{ .slot = abi.Py_tp_new, .pfunc = @ptrCast(&new) },
    .{ .slot = abi.Py_tp_dealloc, .pfunc = @ptrCast(&dealloc) },
    .{ .slot = abi.Py_tp_traverse, .pfunc = @ptrCast(&traverse) },
    .{ .slot = abi.Py_tp_clear, .pfunc = @ptrCast(&clear) },
    .{ .slot = abi.Py_tp_getattro, .pfunc = @ptrCast(&getattro) },
    .{ .slot = abi.Py_tp_setattro, .pfunc = @ptrCast(&setattro) },
    .{ .slot = abi.Py_tp_members, .pfunc = @ptrCast(&members) },
    .{ .slot = abi.Py_tp_doc, .pfunc = "Thread-local data" },
    .{ .slot = 0, .pfunc = null },
};

var spec: abi.TypeSpec = .{
    .name = "_thread._local",
    .basicsize = abi.basicsize(LocalObject),
    .itemsize = 0,
    .flags = @intCast(abi.Py_TPFLAGS_DEFAULT | abi.Py_TPFLAGS_BASETYPE | abi.Py_TPFLAGS_HAVE_GC | abi.Py_TPFLAGS_IMMUTABLETYPE),
    .slots = &slots,
};

/// Creates `_local` for `module`, and what its instances need in the module's state: the per-thread registry
/// type (its registries tracked by the GC as `s.tracked` says: abi.instanceSpec) and the strings it looks up.
pub fn createType(module: *Object, s: *state.State) ?*Object {
    s.object_init = abi.PyType_GetSlot(&abi.PyBaseObject_Type, abi.Py_tp_init);
    s.local_registry_key = abi.PyUnicode_InternFromString("zthread._local registry") orelse return null;
    s.dict_name = abi.PyUnicode_InternFromString("__dict__") orelse return null;
    s.local_registry_type = abi.PyType_FromSpec(&registry_specs[@intFromBool(s.tracked)]) orelse return null;
    return abi.PyType_FromModuleAndSpec(module, &spec, null);
}
