//! `zig build layouts -Dabi=...`: prints the layouts abi.zig declares for that ABI, one `key value` per line,
//! for tools/layouts.py to compare with what a C compiler makes of CPython's own headers (tools/layouts.c
//! prints the same keys). Sizes and offsets in bytes; `head_init` is PyModuleDef_HEAD_INIT's bytes in hex.
const std = @import("std");
const abi = @import("abi.zig");

fn line(out: *std.Io.Writer, key: []const u8, value: usize) !void {
    try out.print("{s} {d}\n", .{ key, value });
}

fn objectLayouts(out: *std.Io.Writer) !void {
    try line(out, "PyObject.size", @sizeOf(abi.Object));
    try line(out, "PyObject.ob_type", @offsetOf(abi.Object, "ob_type"));
    if (abi.free_threaded) {
        inline for (.{ "ob_tid", "ob_flags", "ob_mutex", "ob_gc_bits", "ob_ref_local", "ob_ref_shared" }) |f| {
            try line(out, "PyObject." ++ f, @offsetOf(abi.Object, f));
        }
        try line(out, "PyCriticalSection.size", @sizeOf(abi.CriticalSection));
    } else {
        try line(out, "PyObject.ob_refcnt", @offsetOf(abi.Object, "ob_refcnt"));
    }
    try line(out, "PyModuleDef_Base.size", @sizeOf(abi.ModuleDefBase));
    try line(out, "PyModuleDef.size", @sizeOf(abi.ModuleDef));
    inline for (.{ "m_name", "m_doc", "m_size", "m_methods", "m_slots", "m_traverse", "m_clear", "m_free" }) |f| {
        try line(out, "PyModuleDef." ++ f, @offsetOf(abi.ModuleDef, f));
    }
    try line(out, "PyModuleDef_Slot.size", @sizeOf(abi.ModuleDefSlot));
    try out.writeAll("head_init ");
    for (std.mem.asBytes(&abi.module_def_head_init)) |byte| try out.print("{x:0>2}", .{byte});
    try out.writeAll("\n");
}

pub fn main() !void {
    var buf: [4096]u8 = undefined;
    var writer: std.Io.Writer = .fixed(&buf);
    const out = &writer;
    if (abi.opaque_objects) {
        // abi3t: no object header, no PyModuleDef; the slots and ABI info of PyModExport instead.
        try line(out, "PySlot.size", @sizeOf(abi.Slot));
        try line(out, "PySlot.sl_flags", @offsetOf(abi.Slot, "flags"));
        try line(out, "PySlot.value", @offsetOf(abi.Slot, "value"));
        try line(out, "PyABIInfo.size", @sizeOf(abi.ABIInfo));
        try line(out, "PyABIInfo.flags", @offsetOf(abi.ABIInfo, "flags"));
        try line(out, "PyABIInfo.build_version", @offsetOf(abi.ABIInfo, "build_version"));
        try line(out, "PyABIInfo.abi_version", @offsetOf(abi.ABIInfo, "abi_version"));
        try line(out, "PyCriticalSection.size", @sizeOf(abi.CriticalSection));
    } else {
        try objectLayouts(out);
    }
    try line(out, "PyMethodDef.size", @sizeOf(abi.MethodDef));
    try line(out, "PyMethodDef.ml_flags", @offsetOf(abi.MethodDef, "ml_flags"));
    try line(out, "PyGetSetDef.size", @sizeOf(abi.GetSetDef));
    try line(out, "PyMemberDef.size", @sizeOf(abi.MemberDef));
    try line(out, "PyMemberDef.offset", @offsetOf(abi.MemberDef, "offset"));
    try line(out, "PyMemberDef.flags", @offsetOf(abi.MemberDef, "flags"));
    try line(out, "PyType_Slot.size", @sizeOf(abi.TypeSlot));
    try line(out, "PyType_Spec.size", @sizeOf(abi.TypeSpec));
    try line(out, "PyType_Spec.flags", @offsetOf(abi.TypeSpec, "flags"));
    try line(out, "PyType_Spec.slots", @offsetOf(abi.TypeSpec, "slots"));
    const text = writer.buffered();
    if (std.c.write(1, text.ptr, text.len) != text.len) return error.WriteFailed;
}
