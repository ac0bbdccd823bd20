/* For `zig build -Dtsan-module` only (build.zig, tools/tsan.py): LLVM's ThreadSanitizer instrumentation calls
 * __tsan_memcpy and __tsan_memset, which the interpreter's TSan runtime (gcc 12's libtsan.so.2) does not have.
 * They forward to libc's memcpy/memset, which that runtime intercepts and checks. Compiled without
 * instrumentation and with -fno-builtin, so these calls stay calls. */
#include <string.h>

void *__tsan_memcpy(void *dst, const void *src, size_t n) { return memcpy(dst, src, n); }
void *__tsan_memset(void *dst, int c, size_t n) { return memset(dst, c, n); }
