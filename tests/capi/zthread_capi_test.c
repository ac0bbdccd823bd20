/* A C extension that uses zthread through its C ABI (zthread/include/zthread.h) only, built by
 * tests/test_capi.py with `python -m ziglang cc` against the stable ABI (ZTHREAD_TEST_LIMITED_API), or against
 * a free-threaded interpreter's own (which has no stable ABI before 3.15). */
#ifdef ZTHREAD_TEST_LIMITED_API
#define Py_LIMITED_API 0x030a0000
#endif
#include <Python.h>
#include <stdlib.h>
#include <time.h>
#include "zthread.h"

static const zthread_CAPI *zt;

static PyObject *new_lock(PyObject *self, PyObject *unused) { return zt->lock_new(zt); }

static PyObject *is_lock(PyObject *self, PyObject *obj) { return PyBool_FromLong(zt->lock_check(obj)); }

static PyObject *api_version(PyObject *self, PyObject *unused) {
    return Py_BuildValue("(II)", zt->version, zt->size);
}

static int check_lock(PyObject *obj) {
    if (!zt->lock_check(obj)) {
        PyErr_SetString(PyExc_TypeError, "not a zthread lock");
        return -1;
    }
    return 0;
}

/* acquire(lock, timeout_ns) -> bool, waiting without the GIL */
static PyObject *acquire(PyObject *self, PyObject *args) {
    PyObject *lock;
    long long timeout_ns;
    int got;
    if (!PyArg_ParseTuple(args, "OL", &lock, &timeout_ns) || check_lock(lock) < 0) return NULL;
    Py_BEGIN_ALLOW_THREADS
    got = zt->lock_acquire(lock, timeout_ns);
    Py_END_ALLOW_THREADS
    return PyBool_FromLong(got == ZTHREAD_ACQUIRED);
}

static PyObject *release(PyObject *self, PyObject *lock) {
    if (check_lock(lock) < 0) return NULL;
    if (zt->lock_release(lock) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *locked(PyObject *self, PyObject *lock) {
    if (check_lock(lock) < 0) return NULL;
    return PyBool_FromLong(zt->lock_locked(lock));
}

static PyObject *ids(PyObject *self, PyObject *unused) {
    return Py_BuildValue("(KK)", zt->get_ident(), zt->get_native_id());
}

/* release_later(lock, delay_ms): a native thread (no Python state) sleeps, then releases the lock. */
struct later { PyObject *lock; long delay_ms; };

static void release_later_run(void *arg) {
    struct later *l = arg;
    struct timespec ts = {l->delay_ms / 1000, (l->delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    zt->lock_release(l->lock);
    PyGILState_STATE g = PyGILState_Ensure(); /* the thread's reference to the lock goes with the GIL */
    Py_DECREF(l->lock);
    PyGILState_Release(g);
    free(l);
}

static PyObject *release_later(PyObject *self, PyObject *args) {
    PyObject *lock;
    long delay_ms;
    unsigned long long ident = 0;
    if (!PyArg_ParseTuple(args, "Ol", &lock, &delay_ms) || check_lock(lock) < 0) return NULL;
    struct later *l = malloc(sizeof *l);
    if (l == NULL) return PyErr_NoMemory();
    Py_INCREF(lock);
    l->lock = lock;
    l->delay_ms = delay_ms;
    if (zt->thread_start(release_later_run, l, 0, &ident) != 0) {
        Py_DECREF(lock);
        free(l);
        PyErr_SetString(PyExc_RuntimeError, "thread_start failed");
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(ident);
}

/* count(lock, threads, iterations) -> total: native threads add to a shared counter under the lock,
 * each acquire alternately blocking and timed; a lock `done` (zthread's too) says when all have ended. */
struct counting { PyObject *lock, *guard, *done; long iterations, counter, left, inside_max, inside; };

static void count_run(void *arg) {
    struct counting *c = arg;
    for (long i = 0; i < c->iterations; i++) {
        if (i % 2) {
            while (zt->lock_acquire(c->lock, 1000000) != ZTHREAD_ACQUIRED) {}
        } else {
            zt->lock_acquire(c->lock, -1);
        }
        long inside = ++c->inside;
        if (inside > c->inside_max) c->inside_max = inside;
        c->counter++;
        c->inside--;
        zt->lock_release(c->lock);
    }
    zt->lock_acquire(c->guard, -1);
    int last = --c->left == 0;
    zt->lock_release(c->guard);
    if (last) zt->lock_release(c->done); /* the last touch of `c`: count() returns once `done` is released */
}

static PyObject *count(PyObject *self, PyObject *args) {
    struct counting c = {0};
    long threads;
    if (!PyArg_ParseTuple(args, "Oll", &c.lock, &threads, &c.iterations) || check_lock(c.lock) < 0) return NULL;
    c.guard = zt->lock_new(zt);
    c.done = zt->lock_new(zt);
    if (c.guard == NULL || c.done == NULL) goto error;
    zt->lock_acquire(c.done, 0);
    c.left = threads;
    long started = 0;
    while (started < threads && zt->thread_start(count_run, &c, 256 * 1024, NULL) == 0) started++;
    if (started < threads) { /* those that started still use `c`: account for the others, wait for all */
        zt->lock_acquire(c.guard, -1);
        c.left -= threads - started;
        if (c.left == 0) zt->lock_release(c.done);
        zt->lock_release(c.guard);
    }
    Py_BEGIN_ALLOW_THREADS
    zt->lock_acquire(c.done, -1);
    Py_END_ALLOW_THREADS
    Py_DECREF(c.guard);
    Py_DECREF(c.done);
    if (started < threads) {
        PyErr_SetString(PyExc_RuntimeError, "thread_start failed");
        return NULL;
    }
    return Py_BuildValue("(ll)", c.counter, c.inside_max);
error:
    Py_XDECREF(c.guard);
    Py_XDECREF(c.done);
    return NULL;
}

static PyMethodDef methods[] = {
    {"new_lock", new_lock, METH_NOARGS, NULL},
    {"is_lock", is_lock, METH_O, NULL},
    {"api_version", api_version, METH_NOARGS, NULL},
    {"acquire", acquire, METH_VARARGS, NULL},
    {"release", release, METH_O, NULL},
    {"locked", locked, METH_O, NULL},
    {"ids", ids, METH_NOARGS, NULL},
    {"release_later", release_later, METH_VARARGS, NULL},
    {"count", count, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "zthread_capi_test", NULL, -1, methods};

PyMODINIT_FUNC PyInit_zthread_capi_test(void) {
    zt = zthread_import();
    if (zt == NULL) return NULL;
    PyObject *m = PyModule_Create(&module);
#ifdef Py_GIL_DISABLED
    /* It keeps no state but the capsule's table, set once above: it needs no GIL (else importing it turns
     * the GIL back on for the whole test process). */
    if (m != NULL && PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    return m;
}
