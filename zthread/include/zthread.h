/* zthread's C ABI: native code (C, C++, Zig, Rust...) uses the same locks as Python code, and starts threads.
 *
 *   #include <Python.h>
 *   #include "zthread.h"            (the folder: python -c "import zthread; print(zthread.get_include())")
 *
 *   const zthread_CAPI *zt = zthread_import();          (GIL held; NULL with an exception set on failure)
 *   PyObject *lock = zt->lock_new(zt);                  (GIL held: a new zthread lock, i.e. _thread.lock)
 *   Py_BEGIN_ALLOW_THREADS
 *   if (zt->lock_acquire(lock, 500000000) == 1) {      (no GIL needed: wait up to 0.5 s)
 *       ...
 *       zt->lock_release(lock);
 *   }
 *   Py_END_ALLOW_THREADS
 *
 * Stability: the struct only grows. A field is there when `size` (the module's sizeof) covers it; this header's
 * ZTHREAD_CAPI_VERSION says which fields it knows. Version 1 is the first. Works with the stable ABI
 * (Py_LIMITED_API 3.10+).
 *
 * Which calls need the GIL: lock_new and zthread_import do; every other call works without it (and the
 * waits must not hold it, or Python threads that would release the lock cannot run). Lock objects are
 * Python objects: whoever uses one without the GIL keeps a reference to it meanwhile. On free-threaded
 * CPython (3.13t), read "GIL held" as "thread state attached" and "without the GIL" as "detached"
 * (Py_BEGIN_ALLOW_THREADS): a thread that waits attached holds up the interpreter's stop-the-world pauses.
 */
#ifndef ZTHREAD_H
#define ZTHREAD_H

#ifdef __cplusplus
extern "C" {
#endif

#define ZTHREAD_CAPI_VERSION 1
#define ZTHREAD_CAPI_NAME "zthread._zthread._C_API"

/* lock_acquire's results */
#define ZTHREAD_ACQUIRED 1
#define ZTHREAD_TIMED_OUT 0

typedef struct zthread_CAPI {
    /* The module's ZTHREAD_CAPI_VERSION and sizeof(zthread_CAPI). */
    unsigned int version;
    unsigned int size;

    /* A new unlocked lock (the type Python code gets from allocate_lock()), or NULL with an exception set.
     * GIL held. Pass the struct itself: each interpreter that imports zthread has its own lock type. */
    PyObject *(*lock_new)(const struct zthread_CAPI *api);

    /* 1 if `obj` is a zthread lock (of any interpreter), else 0. */
    int (*lock_check)(PyObject *obj);

    /* Acquire: wait at most `timeout_ns` nanoseconds on the monotonic clock (< 0: no limit; 0: do not wait).
     * ZTHREAD_ACQUIRED or ZTHREAD_TIMED_OUT. Signals do not end the wait (no Python handler can run here). */
    int (*lock_acquire)(PyObject *lock, long long timeout_ns);

    /* Release (any thread may, as in Python): 0, or -1 if the lock was not locked (it stays unlocked). */
    int (*lock_release)(PyObject *lock);

    /* 1 if locked, else 0. */
    int (*lock_locked)(PyObject *lock);

    /* Start an OS thread running function(arg), with a stack of `stack_size` bytes (0: zthread's default, as
     * for Python threads). The thread has no Python thread state (it may call PyGILState_Ensure to run Python
     * code). It is detached: it ends when `function` returns. 0 on success, -1 if the OS refused; if `ident`
     * is not NULL, it receives the thread's identifier (what get_ident returns in it). */
    int (*thread_start)(void (*function)(void *arg), void *arg, size_t stack_size, unsigned long long *ident);

    /* The calling thread's identifier (Python's get_ident()) and OS id (get_native_id()). */
    unsigned long long (*get_ident)(void);
    unsigned long long (*get_native_id)(void);
} zthread_CAPI;

/* The API of the installed zthread (imports it), or NULL with an exception set: ImportError if zthread is
 * missing, or too old for this header's version 1 fields. GIL held. */
static inline const zthread_CAPI *zthread_import(void) {
    const zthread_CAPI *api = (const zthread_CAPI *)PyCapsule_Import(ZTHREAD_CAPI_NAME, 0);
    if (api != NULL && api->size < sizeof(zthread_CAPI)) {
        PyErr_SetString(PyExc_ImportError, "zthread's C API is older than this zthread.h");
        return NULL;
    }
    return api;
}

#ifdef __cplusplus
}
#endif
#endif /* ZTHREAD_H */
