const core = @import("core");
export fn PyInit__zthread() ?*anyopaque { return null; }
