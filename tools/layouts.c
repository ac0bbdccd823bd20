/* What a C compiler makes of CPython's own headers, printed as `key value` lines: the same keys that
 * zsrc/py/layouts.zig prints from zthread's hand-written declarations (tools/layouts.py compares them).
 * Compiled by `zig cc` against one interpreter's headers, with Py_LIMITED_API for abi3, Py_GIL_DISABLED
 * for the free-threaded ABIs, Py_TARGET_ABI3T for abi3t (whose PyObject is opaque: no header, no
 * PyModuleDef; the slots and ABI info of PyModExport instead). */
#include <Python.h>
#include <structmember.h> /* PyMemberDef before 3.12 */
#include <stddef.h>
#include <stdio.h>

#define SIZE(t) printf(#t ".size %zu\n", sizeof(t))
#define OFF(t, f) printf(#t "." #f " %zu\n", offsetof(t, f))

#ifndef Py_TARGET_ABI3T
static PyModuleDef_Base head = PyModuleDef_HEAD_INIT;
#endif

int main(void) {
#ifdef Py_TARGET_ABI3T
    SIZE(PySlot);
    OFF(PySlot, sl_flags);
    printf("PySlot.value %zu\n", offsetof(PySlot, sl_ptr));
    SIZE(PyABIInfo);
    OFF(PyABIInfo, flags);
    OFF(PyABIInfo, build_version);
    OFF(PyABIInfo, abi_version);
    SIZE(PyCriticalSection);
#else
    SIZE(PyObject);
    OFF(PyObject, ob_type);
#ifdef Py_GIL_DISABLED
    OFF(PyObject, ob_tid);
#if PY_VERSION_HEX >= 0x030E0000
    OFF(PyObject, ob_flags);
#else
    printf("PyObject.ob_flags %zu\n", offsetof(PyObject, _padding));
#endif
    OFF(PyObject, ob_mutex);
    OFF(PyObject, ob_gc_bits);
    OFF(PyObject, ob_ref_local);
    OFF(PyObject, ob_ref_shared);
    SIZE(PyCriticalSection);
#else
    OFF(PyObject, ob_refcnt);
#endif
    SIZE(PyModuleDef_Base);
    SIZE(PyModuleDef);
    OFF(PyModuleDef, m_name);
    OFF(PyModuleDef, m_doc);
    OFF(PyModuleDef, m_size);
    OFF(PyModuleDef, m_methods);
    OFF(PyModuleDef, m_slots);
    OFF(PyModuleDef, m_traverse);
    OFF(PyModuleDef, m_clear);
    OFF(PyModuleDef, m_free);
    SIZE(PyModuleDef_Slot);
    printf("head_init ");
    for (size_t i = 0; i < sizeof head; i++) printf("%02x", ((unsigned char *)&head)[i]);
    printf("\n");
#endif
    SIZE(PyMethodDef);
    OFF(PyMethodDef, ml_flags);
    SIZE(PyGetSetDef);
    SIZE(PyMemberDef);
    OFF(PyMemberDef, offset);
    OFF(PyMemberDef, flags);
    SIZE(PyType_Slot);
    SIZE(PyType_Spec);
    OFF(PyType_Spec, flags);
    OFF(PyType_Spec, slots);
    return 0;
}
