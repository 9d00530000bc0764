/* memlock._speedups: the optional C fast path of lock() and Lock.unlock().
 *
 * Only the common case lives here: one full lock (no on-fault) of a C-contiguous buffer
 * on pages nobody in this process holds, and its release. Everything else -- nesting,
 * on-fault locks, lock_all() in force, queued releases, big ranges populated in
 * parallel, errors -- is handled by the pure-Python registry (memlock/_registry.py), which
 * stays the reference implementation. The two share the registry's data and its mutex, so
 * they can be mixed freely, call by call.
 *
 * Why: on a small range the kernel's work is a few microseconds, and the Python path
 * (ctypes argument conversion, the memoryview -> address dance, the registry's bytecode)
 * costs about as much again. Here it is one C call per lock and one per unlock.
 *
 * Interrupts: no Python code runs inside these functions once they have taken the mutex
 * (only C calls of the C API on lists, ints and the Lock's slots), so a signal handler,
 * which CPython runs between bytecodes, cannot land inside them. The Hold type below is
 * the C path's record of what a Lock holds: when a Lock dies unreleased, its Hold's
 * finalizer -- C, which no interrupt can skip -- queues it for the registry to release.
 *
 * Every function returns None ("not handled here") before it changes anything, so the
 * caller falls back to the Python path, which re-checks everything under the mutex.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <sys/mman.h>
#ifdef __linux__
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#endif

/* Hold states and lock modes: memlock/_registry.py (NOT_HELD.., MODE_FULL). */
enum { NOT_HELD = 0, HELD = 1, HANDED_OUT = 2, RELEASED = 3 };
enum { MODE_FULL = 0 };

/* The handshake with the Python code. This module reads memlock's Python objects by name
 * and layout: the registry's attributes and methods below, Lock's slots, the hold states,
 * the modes and the counts' tuples. memlock/_critical.py uses the module only if LAYOUT
 * equals its C_LAYOUT (a stale build falls back to pure Python with a warning), and
 * memlock/_lock.py checks the names against the registry it is given;
 * tests/test_c_handshake.py checks every name this file reads is listed here. Bump
 * MEMLOCK_C_LAYOUT (here and in _critical.py) whenever any of these change. */
#ifndef MEMLOCK_C_LAYOUT
#define MEMLOCK_C_LAYOUT 1
#endif
static const char *const registry_attributes[] = {
    "_mutex", "_pending", "_keys", "_vals", "_lock_all_flags", "generation",
    "_unlock_all_due", "_unsure", "release", "_fresh_lock_failed", NULL};
static const char *const lock_slots[] = {
    "__weakref__", "_hold", "_mode", "_pinned", "address", "nbytes", NULL};

typedef struct {
    PyObject_HEAD
    PyObject *registry;   /* memlock._registry.PageRegistry */
    PyObject *lock_type;  /* memlock._lock.Lock */
    PyObject *zero;       /* the registry's (0, 0) */
    PyObject *one_full;   /* the registry's (1, 0) */
    PyObject *release_fallback; /* registry.release */
    uint64_t page_size;
    uint64_t max_bytes;   /* ranges this long or longer take the Python path */
    volatile unsigned char *fork_byte; /* the registry's byte of the fork watch, or NULL */
} FastPath;

/* The registry's queue of holds to release (registry._pending), shared by every Hold's
 * finalizer. Set by FastPath.__init__; one interpreter only. */
static PyObject *hold_queue;

static PyObject *s_mutex, *s_pending, *s_keys, *s_vals, *s_lock_all_flags, *s_generation;
static PyObject *s_unlock_all_due, *s_unsure, *s_hold, *s_pinned, *s_mode, *s_address, *s_nbytes;

/* -- Hold: what one Lock holds, outliving it until released --------------------------- */

typedef struct {
    PyObject_HEAD
    unsigned long long start, end;
    long long generation;
    int mode, state;
} Hold;

static PyTypeObject HoldType;

/* A Hold dying while still counted (its Lock collected unreleased, whatever ran or failed
 * to run in the Lock's Python finalizer) puts itself on the registry's queue: it is
 * resurrected there until the registry releases it. */
static void
hold_finalize(PyObject *self)
{
    Hold *h = (Hold *)self;
    if ((h->state != HELD && h->state != HANDED_OUT) || hold_queue == NULL)
        return;
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (PyList_Append(hold_queue, self) < 0)
        PyErr_WriteUnraisable(self);
    PyErr_Restore(type, value, tb);
}

static void
hold_dealloc(PyObject *self)
{
    if (PyObject_CallFinalizerFromDealloc(self) < 0)
        return; /* queued: alive again */
    Py_TYPE(self)->tp_free(self);
}

static PyMemberDef hold_members[] = {
    {"start", T_ULONGLONG, offsetof(Hold, start), 0, "first byte (page aligned)"},
    {"end", T_ULONGLONG, offsetof(Hold, end), 0, "end (page aligned, exclusive)"},
    {"generation", T_LONGLONG, offsetof(Hold, generation), 0, "registry generation"},
    {"mode", T_INT, offsetof(Hold, mode), 0, "FULL or ONFAULT"},
    {"state", T_INT, offsetof(Hold, state), 0, "NOT_HELD, HELD, HANDED_OUT, RELEASED"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject HoldType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "memlock._speedups.Hold",
    .tp_basicsize = sizeof(Hold),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "What a Lock made by the C fast path holds (see memlock._registry.Hold).",
    .tp_dealloc = hold_dealloc,
    .tp_finalize = hold_finalize,
    .tp_members = hold_members,
};

/* -- Mutex: the registry's mutex, usable from Python and directly from C --------------- */

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    int locked;
    unsigned long owner; /* the thread that holds it (valid while locked) */
    PyObject *outer;     /* a Mutex never to wait for this one under (set_outer), or NULL */
} Mutex;

/* Raised by a blocking take of a Mutex by the thread that holds it already: a signal
 * handler or a finalizer that called memlock while memlock ran in the same thread. Waiting
 * would never end; the caller can defer instead (memlock/_lock.py, _secrets/). */
static PyObject *Reentered;

static PyTypeObject MutexType;

/* Take the mutex, waiting with the GIL released; signal handlers run while waiting (as in
 * threading.Lock). 1: taken; 0: busy (only when !blocking); -1: error (an exception). */
static int
mutex_take(Mutex *m, int blocking)
{
    unsigned long me = PyThread_get_thread_ident();
    if (PyThread_acquire_lock(m->lock, NOWAIT_LOCK)) {
        m->locked = 1;
        m->owner = me;
        return 1;
    }
    Mutex *outer = (Mutex *)m->outer;
    if ((m->locked && m->owner == me) /* only this thread can have set it to itself */
        || (outer != NULL && outer->locked && outer->owner == me)) {
        /* Waiting here would wait for this very thread: for itself, or for a thread that
         * holds this mutex and waits for ``outer``, which this thread holds (the lock
         * order is this mutex, then outer). */
        if (!blocking)
            return 0;
        PyErr_SetString(Reentered,
                        "memlock was called from code that interrupted memlock in the same "
                        "thread (a signal handler or a finalizer): it would wait for itself");
        return -1;
    }
    if (!blocking)
        return 0;
    for (;;) {
        PyLockStatus r;
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(m->lock, -1, 1);
        Py_END_ALLOW_THREADS
        if (r == PY_LOCK_ACQUIRED) {
            m->locked = 1;
            m->owner = me;
            return 1;
        }
        if (r != PY_LOCK_INTR) {
            PyErr_SetString(PyExc_RuntimeError, "cannot take the mutex");
            return -1;
        }
        if (Py_MakePendingCalls() < 0)
            return -1;
    }
}

static int
mutex_give(Mutex *m)
{
    if (!m->locked) {
        PyErr_SetString(PyExc_RuntimeError, "release of an unlocked mutex");
        return -1;
    }
    m->locked = 0;
    m->owner = 0;
    PyThread_release_lock(m->lock);
    return 0;
}

static PyObject *
mutex_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "Mutex() takes no arguments");
        return NULL;
    }
    Mutex *m = (Mutex *)type->tp_alloc(type, 0);
    if (m == NULL)
        return NULL;
    m->lock = PyThread_allocate_lock();
    if (m->lock == NULL) {
        Py_DECREF(m);
        return PyErr_NoMemory();
    }
    return (PyObject *)m;
}

static void
mutex_dealloc(Mutex *m)
{
    Py_CLEAR(m->outer);
    if (m->lock != NULL) {
        if (m->locked)
            PyThread_release_lock(m->lock);
        PyThread_free_lock(m->lock);
    }
    Py_TYPE(m)->tp_free((PyObject *)m);
}

/* acquire(blocking=True) -> bool */
static PyObject *
mutex_acquire(Mutex *m, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    int blocking = 1;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs + nkw > 1) {
        PyErr_SetString(PyExc_TypeError, "acquire(blocking=True)");
        return NULL;
    }
    if (nkw && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), "blocking") != 0) {
        PyErr_SetString(PyExc_TypeError, "acquire(blocking=True)");
        return NULL;
    }
    if (nargs + nkw == 1 && (blocking = PyObject_IsTrue(args[0])) < 0)
        return NULL;
    int taken = mutex_take(m, blocking);
    if (taken < 0)
        return NULL;
    return PyBool_FromLong(taken);
}

static PyObject *
mutex_enter(Mutex *m, PyObject *Py_UNUSED(ignored))
{
    if (mutex_take(m, 1) < 0)
        return NULL;
    Py_RETURN_TRUE;
}

static PyObject *
mutex_release(Mutex *m, PyObject *Py_UNUSED(ignored))
{
    if (mutex_give(m) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
mutex_exit(Mutex *m, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs))
{
    if (mutex_give(m) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
mutex_locked(Mutex *m, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(m->locked);
}

static PyObject *
mutex_owned(Mutex *m, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(m->locked && m->owner == PyThread_get_thread_ident());
}

/* set_outer(mutex): a thread holding ``mutex`` must never wait for this one (it is taken
 * before ``mutex``, never after): such a wait raises Reentered instead. */
static PyObject *
mutex_set_outer(Mutex *m, PyObject *outer)
{
    if (!Py_IS_TYPE(outer, &MutexType)) {
        PyErr_SetString(PyExc_TypeError, "set_outer(mutex): a Mutex");
        return NULL;
    }
    Py_INCREF(outer);
    Py_XSETREF(m->outer, outer);
    Py_RETURN_NONE;
}

/* reinit(): a fresh, unheld lock in place (a forked child, where the thread that held the
 * old one does not exist). The old lock is left as it is: it may be held. */
static PyObject *
mutex_reinit(Mutex *m, PyObject *Py_UNUSED(ignored))
{
    PyThread_type_lock lock = PyThread_allocate_lock();
    if (lock == NULL)
        return PyErr_NoMemory();
    m->lock = lock;
    m->locked = 0;
    m->owner = 0;
    Py_RETURN_NONE;
}

static PyMethodDef mutex_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))mutex_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True) -> bool"},
    {"release", (PyCFunction)mutex_release, METH_NOARGS, "release()"},
    {"locked", (PyCFunction)mutex_locked, METH_NOARGS, "locked() -> bool"},
    {"owned", (PyCFunction)mutex_owned, METH_NOARGS, "owned() -> bool: held by this thread"},
    {"set_outer", (PyCFunction)mutex_set_outer, METH_O,
     "set_outer(mutex): never wait for this mutex while holding that one"},
    {"reinit", (PyCFunction)mutex_reinit, METH_NOARGS,
     "reinit(): a fresh unheld lock (in a forked child)"},
    {"__enter__", (PyCFunction)mutex_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))mutex_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject MutexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "memlock._speedups.Mutex",
    .tp_basicsize = sizeof(Mutex),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A non-reentrant mutex like threading.Lock that the C fast path takes "
              "without a Python call.",
    .tp_new = mutex_new,
    .tp_dealloc = (destructor)mutex_dealloc,
    .tp_methods = mutex_methods,
};

/* -- the registry's state ------------------------------------------------------------ */

typedef struct {
    PyObject *dict;               /* the registry's __dict__ (new reference) */
    PyObject *mutex, *keys, *vals; /* new references */
} State;

static void
state_clear(State *st)
{
    Py_CLEAR(st->dict);
    Py_CLEAR(st->mutex);
    Py_CLEAR(st->keys);
    Py_CLEAR(st->vals);
}

/* An attribute of the registry, from its __dict__ (new reference; NULL with an error). */
static PyObject *
registry_attr(State *st, PyObject *name)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *v;
    int found = PyDict_GetItemRef(st->dict, name, &v); /* a strong reference, atomically */
    if (found == 0)
        PyErr_SetObject(PyExc_AttributeError, name);
    return found > 0 ? v : NULL;
#else
    PyObject *v = PyDict_GetItemWithError(st->dict, name);
    if (v == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetObject(PyExc_AttributeError, name);
        return NULL;
    }
    Py_INCREF(v);
    return v;
#endif
}

/* Take the registry's mutex and read its maps. 1: taken; 0: not the fast case (nothing
 * held); -1: error (nothing held). The fast case needs no fork to catch up with (the
 * Python path does that first, before it takes the mutex, which a thread that does not
 * exist in the child may hold), no queued releases, no unfinished unlock_all() and no
 * lock_all() in force. */
static int
state_enter(FastPath *fp, State *st)
{
    st->dict = st->mutex = st->keys = st->vals = NULL;
    if (fp->fork_byte != NULL && *fp->fork_byte == 0)
        return 0;
    st->dict = PyObject_GenericGetDict(fp->registry, NULL);
    if (st->dict == NULL)
        return -1;
    st->mutex = registry_attr(st, s_mutex);
    if (st->mutex == NULL) {
        state_clear(st);
        return -1;
    }
    if (!Py_IS_TYPE(st->mutex, &MutexType)) { /* a registry this module did not set up */
        state_clear(st);
        return 0;
    }
    if (mutex_take((Mutex *)st->mutex, 1) < 0) {
        state_clear(st);
        return -1;
    }
    int fast = -1;
    PyObject *pending = registry_attr(st, s_pending);
    PyObject *flags = pending ? registry_attr(st, s_lock_all_flags) : NULL;
    PyObject *due = flags ? registry_attr(st, s_unlock_all_due) : NULL;
    PyObject *unsure = due ? registry_attr(st, s_unsure) : NULL;
    if (unsure != NULL) {
        st->keys = registry_attr(st, s_keys);
        st->vals = st->keys ? registry_attr(st, s_vals) : NULL;
    }
    if (st->vals != NULL) {
        int busy = PyObject_IsTrue(pending);
        int all = PyObject_IsTrue(flags);
        int unfinished = PyObject_IsTrue(due);
        int repair = PyObject_IsTrue(unsure);
        if (busy >= 0 && all >= 0 && unfinished >= 0 && repair >= 0)
            fast = !busy && !all && !unfinished && !repair && PyList_CheckExact(st->keys)
                   && PyList_CheckExact(st->vals)
                   && PyList_GET_SIZE(st->keys) == PyList_GET_SIZE(st->vals);
    }
    Py_XDECREF(pending);
    Py_XDECREF(flags);
    Py_XDECREF(due);
    Py_XDECREF(unsure);
    if (fast != 1) {
        (void)mutex_give((Mutex *)st->mutex); /* taken above: cannot fail */
        state_clear(st);
    }
    return fast;
}

/* Release the mutex taken by state_enter (which cannot fail) and drop the references. */
static void
state_leave(State *st)
{
    (void)mutex_give((Mutex *)st->mutex);
    state_clear(st);
}

/* An int as uint64_t; -1 with an error (negative, too big, not an int). */
static int
as_u64(PyObject *v, uint64_t *out)
{
#if ULONG_MAX >= UINT64_MAX
    unsigned long x = PyLong_AsUnsignedLong(v); /* a fast loop over the digits */
    if (x == ULONG_MAX && PyErr_Occurred())
        return -1;
#else
    unsigned long long x = PyLong_AsUnsignedLongLong(v);
    if (x == ULLONG_MAX && PyErr_Occurred())
        return -1;
#endif
    *out = (uint64_t)x;
    return 0;
}

static int
key_at(PyObject *keys, Py_ssize_t i, uint64_t *out)
{
    return as_u64(PyList_GET_ITEM(keys, i), out);
}

/* bisect_left(keys, x); -1 on error. */
static Py_ssize_t
bisect_left(PyObject *keys, uint64_t x)
{
    Py_ssize_t lo = 0, hi = PyList_GET_SIZE(keys);
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        uint64_t k;
        if (key_at(keys, mid, &k) < 0)
            return -1;
        if (k < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static int
value_is(PyObject *vals, Py_ssize_t i, PyObject *expected)
{
    PyObject *v = PyList_GET_ITEM(vals, i);
    if (v == expected)
        return 1;
    return PyObject_RichCompareBool(v, expected, Py_EQ);
}

/* mlock or munlock; 0 or errno. The GIL is released: a page fault taken by mlock may need
 * another Python thread of this process (a userfaultfd handler, an in-process FUSE
 * server), and munlock may wait for the mapping lock held by such a fault. */
static int
sys_lock(int lock, uint64_t start, uint64_t len)
{
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = lock ? mlock((void *)(uintptr_t)start, len) : munlock((void *)(uintptr_t)start, len);
    if (rc)
        err = errno;
    Py_END_ALLOW_THREADS
    return rc ? (err ? err : EINVAL) : 0;
}

/* -- lock ------------------------------------------------------------------------------ */

/* Record a fresh full lock of [start, end) at index i of the maps (mutex held), exactly as
 * PageRegistry.acquire's fast path does. -1 on error (maps unchanged). */
static int
record_fresh(FastPath *fp, State *st, Py_ssize_t i, uint64_t start, uint64_t end)
{
    PyObject *keys = st->keys, *vals = st->vals;
    Py_ssize_t n = PyList_GET_SIZE(keys);
    uint64_t k = 0;
    if (i < n && key_at(keys, i, &k) < 0)
        return -1;
    PyObject *start_obj = PyLong_FromUnsignedLongLong(start);
    if (start_obj == NULL)
        return -1;
    if (i < n && k == end) {
        /* [start, end) ends where a held range begins: one new breakpoint. */
        int same = value_is(vals, i, fp->one_full);
        if (same < 0 || PyList_Insert(keys, i, start_obj) < 0) {
            Py_DECREF(start_obj);
            return -1;
        }
        Py_DECREF(start_obj);
        if (PyList_Insert(vals, i, fp->one_full) < 0) {
            (void)PyList_SetSlice(keys, i, i + 1, NULL);
            return -1;
        }
        if (same) { /* the next range has the same counts: merge */
            (void)PyList_SetSlice(keys, i + 1, i + 2, NULL);
            (void)PyList_SetSlice(vals, i + 1, i + 2, NULL);
        }
        return 0;
    }
    PyObject *end_obj = PyLong_FromUnsignedLongLong(end);
    PyObject *new_keys = end_obj ? PyTuple_Pack(2, start_obj, end_obj) : NULL;
    PyObject *new_vals = new_keys ? PyTuple_Pack(2, fp->one_full, fp->zero) : NULL;
    Py_DECREF(start_obj);
    Py_XDECREF(end_obj);
    int rc = -1;
    if (new_vals != NULL && PyList_SetSlice(keys, i, i, new_keys) == 0) {
        if (PyList_SetSlice(vals, i, i, new_vals) == 0)
            rc = 0;
        else
            (void)PyList_SetSlice(keys, i, i + 2, NULL);
    }
    Py_XDECREF(new_keys);
    Py_XDECREF(new_vals);
    return rc;
}

static PyObject *
not_initialised(void)
{
    PyErr_SetString(PyExc_TypeError, "FastPath.__init__() was not called");
    return NULL;
}

/* A Lock holding [start, end) in full and its Hold, counted in the registry's current
 * generation and handed out (mutex held). Its slots are set here rather than by Python
 * code, so that none runs; FastPath.__init__ checks the class has exactly these slots. */
static PyObject *
new_lock(FastPath *fp, State *st, PyObject *pinned, uint64_t start, uint64_t end)
{
    PyObject *generation = registry_attr(st, s_generation);
    if (generation == NULL)
        return NULL;
    long long gen = PyLong_AsLongLong(generation);
    Py_DECREF(generation);
    if (gen == -1 && PyErr_Occurred())
        return NULL;
    Hold *hold = PyObject_New(Hold, &HoldType);
    if (hold == NULL)
        return NULL;
    hold->start = start;
    hold->end = end;
    hold->generation = gen;
    hold->mode = MODE_FULL;
    hold->state = NOT_HELD; /* until the Lock is complete: a failure here queues nothing */
    PyTypeObject *type = (PyTypeObject *)fp->lock_type;
    PyObject *held = type->tp_alloc(type, 0);
    PyObject *address = held ? PyLong_FromUnsignedLongLong(start) : NULL;
    PyObject *nbytes = address ? PyLong_FromUnsignedLongLong(end - start) : NULL;
    PyObject *mode = nbytes ? PyLong_FromLong(MODE_FULL) : NULL;
    int rc = -1;
    if (mode != NULL && PyObject_SetAttr(held, s_hold, (PyObject *)hold) == 0
        && PyObject_SetAttr(held, s_pinned, pinned) == 0
        && PyObject_SetAttr(held, s_mode, mode) == 0
        && PyObject_SetAttr(held, s_address, address) == 0
        && PyObject_SetAttr(held, s_nbytes, nbytes) == 0) {
        hold->state = HANDED_OUT;
        rc = 0;
    }
    Py_DECREF(hold);
    Py_XDECREF(address);
    Py_XDECREF(nbytes);
    Py_XDECREF(mode);
    if (rc < 0)
        Py_CLEAR(held);
    return held;
}

/* lock(obj, offset, length) -> Lock, or None where the Python path must decide. */
static PyObject *
fastpath_lock(FastPath *fp, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "lock(obj, offset, length)");
        return NULL;
    }
    if (fp->registry == NULL)
        return not_initialised();
    PyObject *obj = args[0], *offset_obj = args[1], *length_obj = args[2];
    PyObject *held = NULL;
    if (!PyLong_CheckExact(offset_obj) || (length_obj != Py_None && !PyLong_CheckExact(length_obj)))
        Py_RETURN_NONE;
    if (!PyObject_CheckBuffer(obj))
        Py_RETURN_NONE;
    PyObject *pinned = PyMemoryView_FromObject(obj);
    if (pinned == NULL) {
        /* The Python path raises the right error for a bad buffer; anything else (a
         * MemoryError, an interrupt) is raised here. */
        if (!PyErr_ExceptionMatches(PyExc_TypeError) && !PyErr_ExceptionMatches(PyExc_ValueError)
            && !PyErr_ExceptionMatches(PyExc_BufferError))
            return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    Py_buffer *view = PyMemoryView_GET_BUFFER(pinned);
    Py_ssize_t total = view->len;
    long long offset = PyLong_AsLongLong(offset_obj);
    long long length = -1;
    if (!PyErr_Occurred() && length_obj != Py_None)
        length = PyLong_AsLongLong(length_obj);
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            goto error;
        PyErr_Clear(); /* the Python path says what is out of range */
        goto python_path;
    }
    if (length_obj == Py_None)
        length = total - offset;
    if (view->buf == NULL || total <= 0 || !PyBuffer_IsContiguous(view, 'C') || offset < 0
        || offset > total || length <= 0 || length > total - offset)
        goto python_path;
    uint64_t address = (uint64_t)(uintptr_t)view->buf + (uint64_t)offset;
    uint64_t start = address - address % fp->page_size;
    uint64_t end = address + (uint64_t)length;
    end += (fp->page_size - end % fp->page_size) % fp->page_size;
    if (end - start >= fp->max_bytes)
        goto python_path;

    State st;
    int fast = state_enter(fp, &st);
    if (fast < 0)
        goto error;
    if (fast == 0)
        goto python_path;
    Py_ssize_t n = PyList_GET_SIZE(st.keys);
    Py_ssize_t i = bisect_left(st.keys, start);
    if (i < 0)
        goto leave_error;
    int fresh = 1;
    if (i < n) {
        uint64_t k;
        if (key_at(st.keys, i, &k) < 0)
            goto leave_error;
        fresh = k >= end;
    }
    if (fresh && i > 0) {
        fresh = value_is(st.vals, i - 1, fp->zero);
        if (fresh < 0)
            goto leave_error;
    }
    if (!fresh) {
        state_leave(&st);
        goto python_path;
    }
    int err = sys_lock(1, start, end - start);
    if (err) {
        /* Linux may leave the part before the failure locked: unlock it here, before any
         * Python code can run (state_enter saw no lock_all() in force). The registry then
         * undoes what is left (holes on other systems) and builds the error, still under
         * the mutex: all or nothing. */
        (void)sys_lock(0, start, end - start);
        PyObject *exc = PyObject_CallMethod(fp->registry, "_fresh_lock_failed", "KKi",
                                            (unsigned long long)start,
                                            (unsigned long long)end, err);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        goto leave_error;
    }
    /* From the mlock to the return, no Python code runs: allocating and filling the Lock
     * and its Hold and the registry's lists are C calls. So no signal handler or other
     * asynchronous exception can leave pages locked and counted with no Lock to release
     * them. */
    held = new_lock(fp, &st, pinned, start, end);
    if (held == NULL) {
        (void)sys_lock(0, start, end - start);
        goto leave_error;
    }
    if (record_fresh(fp, &st, i, start, end) < 0) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *hold = PyObject_GetAttr(held, s_hold);
        if (hold != NULL && Py_IS_TYPE(hold, &HoldType))
            ((Hold *)hold)->state = RELEASED; /* owns nothing again */
        Py_XDECREF(hold);
        PyErr_Restore(type, value, tb);
        (void)sys_lock(0, start, end - start);
        goto leave_error;
    }
    Py_DECREF(pinned);
    state_leave(&st);
    return held;

leave_error:
    state_leave(&st);
error:
    Py_XDECREF(held); /* owns nothing: its finalizer does nothing */
    Py_DECREF(pinned);
    return NULL;
python_path:
    Py_DECREF(pinned); /* the only reference: releases the buffer export */
    Py_RETURN_NONE;
}

/* -- release -------------------------------------------------------------------------- */

/* release(hold): PageRegistry.release(), fast when ``hold`` is this module's Hold and the
 * only full lock on an isolated range. */
static PyObject *
fastpath_release(FastPath *fp, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 1) {
        PyErr_SetString(PyExc_TypeError, "release(hold)");
        return NULL;
    }
    if (fp->registry == NULL)
        return not_initialised();
    if (!Py_IS_TYPE(args[0], &HoldType))
        goto python_path;
    Hold *hold = (Hold *)args[0];
    if ((hold->state != HELD && hold->state != HANDED_OUT) || hold->mode != MODE_FULL
        || hold->start >= hold->end)
        goto python_path;
    uint64_t start = hold->start, end = hold->end;
    State st;
    int fast = state_enter(fp, &st);
    if (fast < 0)
        return NULL;
    if (fast == 0)
        goto python_path;
    PyObject *generation = registry_attr(&st, s_generation);
    long long gen = generation ? PyLong_AsLongLong(generation) : -1;
    Py_XDECREF(generation);
    if (gen == -1 && PyErr_Occurred())
        goto leave_error;
    if (gen != hold->generation) {
        state_leave(&st);
        goto python_path;
    }
    Py_ssize_t n = PyList_GET_SIZE(st.keys);
    Py_ssize_t i = bisect_left(st.keys, start);
    if (i < 0)
        goto leave_error;
    int isolated = 0;
    if (i + 1 < n) {
        uint64_t k0, k1;
        if (key_at(st.keys, i, &k0) < 0 || key_at(st.keys, i + 1, &k1) < 0)
            goto leave_error;
        if (k0 == start && k1 == end) {
            isolated = value_is(st.vals, i, fp->one_full);
            if (isolated > 0 && i > 0)
                isolated = value_is(st.vals, i - 1, fp->zero);
            if (isolated < 0)
                goto leave_error;
        }
    }
    if (!isolated) {
        state_leave(&st);
        goto python_path;
    }
    int last = value_is(st.vals, i + 1, fp->zero);
    if (last < 0)
        goto leave_error;
    Py_ssize_t stop = last ? i + 2 : i + 1;
    (void)sys_lock(0, start, end - start); /* pinned pages: cannot fail */
    if (PyList_SetSlice(st.keys, i, stop, NULL) < 0)
        goto leave_error;
    if (PyList_SetSlice(st.vals, i, stop, NULL) < 0)
        goto leave_error; /* MemoryError shrinking a list: cannot happen */
    hold->state = RELEASED;
    state_leave(&st);
    Py_RETURN_NONE;

leave_error:
    state_leave(&st);
    return NULL;
python_path:
    return PyObject_Vectorcall(fp->release_fallback, args, 1, NULL);
}

/* -- the type and the module ----------------------------------------------------------- */

/* PyModule_Add (3.13) for older Pythons: add obj to the module, stealing the reference. */
static int
add_owned(PyObject *module, const char *name, PyObject *obj)
{
    if (obj == NULL)
        return -1;
    int r = PyModule_AddObjectRef(module, name, obj);
    Py_DECREF(obj);
    return r;
}

/* A tuple of the NULL-terminated names. */
static PyObject *
names_tuple(const char *const *names)
{
    Py_ssize_t n = 0;
    while (names[n] != NULL)
        n++;
    PyObject *t = PyTuple_New(n);
    for (Py_ssize_t i = 0; t != NULL && i < n; i++) {
        PyObject *name = PyUnicode_FromString(names[i]);
        if (name == NULL)
            Py_CLEAR(t);
        else
            PyTuple_SET_ITEM(t, i, name);
    }
    return t;
}

static int
fastpath_init(FastPath *fp, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"registry", "lock_type", "zero", "one_full", "page_size",
                            "max_bytes", "fork_byte", NULL};
    PyObject *registry, *lock_type, *zero, *one_full;
    unsigned long long page_size, max_bytes, fork_byte = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOKK|K", names, &registry, &lock_type,
                                     &zero, &one_full, &page_size, &max_bytes, &fork_byte))
        return -1;
    if (page_size == 0 || (page_size & (page_size - 1))) {
        PyErr_SetString(PyExc_ValueError, "page_size must be a power of two");
        return -1;
    }
    /* Locks are made with tp_alloc and their slots set directly (new_lock): accept only
     * a class whose instances are exactly those five slots. */
    PyObject *slots = PyType_Check(lock_type) ? PyObject_GetAttrString(lock_type, "__slots__")
                                              : NULL;
    PyObject *want = slots ? names_tuple(lock_slots) : NULL;
    int same = want ? PyObject_RichCompareBool(slots, want, Py_EQ) : -1;
    Py_XDECREF(slots);
    Py_XDECREF(want);
    if (same != 1 || ((PyTypeObject *)lock_type)->tp_dictoffset != 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "lock_type must be memlock.Lock");
        return -1;
    }
    PyObject *fallback = PyObject_GetAttrString(registry, "release");
    if (fallback == NULL)
        return -1;
    PyObject *queue = PyObject_GetAttrString(registry, "_pending");
    if (queue == NULL || !PyList_CheckExact(queue)) {
        Py_XDECREF(queue);
        Py_DECREF(fallback);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "registry._pending must be a list");
        return -1;
    }
    Py_XSETREF(hold_queue, queue);
    Py_XSETREF(fp->release_fallback, fallback);
    Py_INCREF(registry);
    Py_XSETREF(fp->registry, registry);
    Py_INCREF(lock_type);
    Py_XSETREF(fp->lock_type, lock_type);
    Py_INCREF(zero);
    Py_XSETREF(fp->zero, zero);
    Py_INCREF(one_full);
    Py_XSETREF(fp->one_full, one_full);
    fp->page_size = page_size;
    fp->max_bytes = max_bytes;
    fp->fork_byte = (volatile unsigned char *)(uintptr_t)fork_byte; /* the registry's: byte 0 */
    return 0;
}

static int
fastpath_traverse(FastPath *fp, visitproc visit, void *arg)
{
    Py_VISIT(fp->registry);
    Py_VISIT(fp->lock_type);
    Py_VISIT(fp->zero);
    Py_VISIT(fp->one_full);
    Py_VISIT(fp->release_fallback);
    return 0;
}

static int
fastpath_clear(FastPath *fp)
{
    Py_CLEAR(fp->registry);
    Py_CLEAR(fp->lock_type);
    Py_CLEAR(fp->zero);
    Py_CLEAR(fp->one_full);
    Py_CLEAR(fp->release_fallback);
    return 0;
}

static void
fastpath_dealloc(FastPath *fp)
{
    PyObject_GC_UnTrack(fp);
    (void)fastpath_clear(fp);
    Py_TYPE(fp)->tp_free((PyObject *)fp);
}

static PyMethodDef fastpath_methods[] = {
    {"lock", (PyCFunction)(void (*)(void))fastpath_lock, METH_FASTCALL,
     "lock(obj, offset, length) -> Lock | None: the common case of memlock.lock()."},
    {"release", (PyCFunction)(void (*)(void))fastpath_release, METH_FASTCALL,
     "release(hold): PageRegistry.release()."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "memlock._speedups.FastPath",
    .tp_basicsize = sizeof(FastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The C fast path of lock() and unlock() over one PageRegistry.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)fastpath_init,
    .tp_dealloc = (destructor)fastpath_dealloc,
    .tp_traverse = (traverseproc)fastpath_traverse,
    .tp_clear = (inquiry)fastpath_clear,
    .tp_methods = fastpath_methods,
};

static int
intern(PyObject **slot, const char *name)
{
    *slot = PyUnicode_InternFromString(name);
    return *slot == NULL ? -1 : 0;
}

static int
speedups_exec(PyObject *module)
{
    if (intern(&s_mutex, "_mutex") < 0 || intern(&s_pending, "_pending") < 0
        || intern(&s_keys, "_keys") < 0 || intern(&s_vals, "_vals") < 0
        || intern(&s_lock_all_flags, "_lock_all_flags") < 0
        || intern(&s_generation, "generation") < 0 || intern(&s_pinned, "_pinned") < 0
        || intern(&s_mode, "_mode") < 0 || intern(&s_hold, "_hold") < 0
        || intern(&s_unlock_all_due, "_unlock_all_due") < 0
        || intern(&s_unsure, "_unsure") < 0
        || intern(&s_address, "address") < 0 || intern(&s_nbytes, "nbytes") < 0)
        return -1;
    if (PyType_Ready(&FastPathType) < 0 || PyType_Ready(&MutexType) < 0
        || PyType_Ready(&HoldType) < 0)
        return -1;
    if (PyModule_AddIntConstant(module, "LAYOUT", MEMLOCK_C_LAYOUT) < 0
        || PyModule_AddIntConstant(module, "MODE_FULL", MODE_FULL) < 0
        || add_owned(module, "HOLD_STATES", Py_BuildValue(
               "(iiii)", NOT_HELD, HELD, HANDED_OUT, RELEASED)) < 0
        || add_owned(module, "REGISTRY_ATTRIBUTES", names_tuple(registry_attributes)) < 0
        || add_owned(module, "LOCK_SLOTS", names_tuple(lock_slots)) < 0)
        return -1;
    Py_INCREF(&HoldType);
    if (PyModule_AddObject(module, "Hold", (PyObject *)&HoldType) < 0) {
        Py_DECREF(&HoldType);
        return -1;
    }
    if (Reentered == NULL) {
        Reentered = PyErr_NewExceptionWithDoc(
            "memlock._speedups.Reentered",
            "memlock was called, in the same thread, by code that interrupted it (a signal "
            "handler or a finalizer) and would have waited for itself.",
            PyExc_RuntimeError, NULL);
        if (Reentered == NULL)
            return -1;
    }
    Py_INCREF(Reentered);
    if (PyModule_AddObject(module, "Reentered", Reentered) < 0) {
        Py_DECREF(Reentered);
        return -1;
    }
    Py_INCREF(&MutexType);
    if (PyModule_AddObject(module, "Mutex", (PyObject *)&MutexType) < 0) {
        Py_DECREF(&MutexType);
        return -1;
    }
    Py_INCREF(&FastPathType);
    if (PyModule_AddObject(module, "FastPath", (PyObject *)&FastPathType) < 0) {
        Py_DECREF(&FastPathType);
        return -1;
    }
    return 0;
}

static PyModuleDef_Slot speedups_slots[] = {
    {Py_mod_exec, speedups_exec},
#ifdef Py_mod_multiple_interpreters
    /* Static types and interned names: one interpreter (3.12+). */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

/* try_call(mutex, fn, *args) -> bool: fn(*args) with the mutex held, if it is free now.
 * For finalizers, which must never wait (memlock/_critical.py, try_under): taking the
 * mutex and giving it back happen in C, so no signal handler can run between taking it
 * and the code that gives it back, in any thread. False: the mutex was busy. */
static PyObject *
mutex_try_call(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || !Py_IS_TYPE(args[0], &MutexType)) {
        PyErr_SetString(PyExc_TypeError, "try_call(mutex, fn, *args): mutex must be a Mutex");
        return NULL;
    }
    Mutex *m = (Mutex *)args[0];
    if (mutex_take(m, 0) == 0)
        Py_RETURN_FALSE;
    PyObject *r = PyObject_Vectorcall(args[1], args + 2, nargs - 2, NULL);
    (void)mutex_give(m); /* taken above: cannot fail */
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_TRUE;
}

/* -- proc_status_scan: the hot loop of the host scan (memlock/_platform/_hostscan.py) -- */

#ifdef __linux__
/* proc_status_scan(include_unlocked, threads) -> [(pid, status bytes), ...]: every process
 * in /proc whose status has a VmLck line (kernel threads and zombies have none) and, unless
 * include_unlocked, whose VmLck is not 0. The Python loop's job, without the GIL: listing
 * /proc and reading 1,000 status texts is all system calls, and `threads` threads at most
 * (the caller's one of them; one per SCAN_MIN_SHARE processes) halve the wait on 2 CPUs.
 *
 * Worker threads run with every signal blocked, so signals reach the caller's thread and
 * the Python handler runs when the call returns (or at PyErr_CheckSignals after the join);
 * every thread is joined, every fd closed and every buffer freed before the call returns,
 * on every path. */

/* SCAN_MIN_SHARE: processes per extra thread at least. Measured on 2 CPUs (bench/
 * bench_scan_loop.py): one status read is ~11 us of kernel time, one thread ~80 us to
 * start and join; 2 threads take 0.61 ms for 100 processes against 1.06 ms for one. */
enum { SCAN_MAX_THREADS = 64, SCAN_MIN_SHARE = 16, SCAN_READ_SIZE = 16384,
       SCAN_STACK_SIZE = 64 * 1024 };
enum { SCAN_NO_MEMORY = -1 }; /* an error code besides errno values: malloc failed */

typedef struct {
    int pid;
    size_t len;
    char *text;
} ScanKept;

/* What the threads share: each takes the next pid not taken (an atomic counter), so a
 * thread that waits for a CPU leaves its part to the others instead of making them wait. */
typedef struct {
    const int *pids;
    size_t npids;
    size_t next;          /* the next index to take; set to npids to stop them all */
    int include_unlocked;
} ScanJob;

typedef struct {          /* one thread's part: what it kept, the error it met */
    ScanJob *job;
    ScanKept *kept;
    size_t nkept, cap;
    int error;            /* 0, an errno value or SCAN_NO_MEMORY */
    int error_pid;
} ScanShare;

/* Reads /proc/PID/status whole into *buf (grown as needed); 0, an errno value or
 * SCAN_NO_MEMORY. The kernel makes a status text at once (seq_file single_open), so a read
 * shorter than asked is its end: one read per process, and more only for a text that
 * fills the buffer (thousands of supplementary groups). */
static int
scan_read_status(int pid, char **buf, size_t *cap, size_t *len)
{
    char path[32];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    int fd;
    do
        fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return errno;
    size_t n = 0;
    int error = 0;
    for (;;) {
        if (n == *cap) {
            char *bigger = *cap > SIZE_MAX / 2 ? NULL : realloc(*buf, *cap * 2);
            if (bigger == NULL) {
                error = SCAN_NO_MEMORY;
                break;
            }
            *buf = bigger;
            *cap *= 2;
        }
        ssize_t got = read(fd, *buf + n, *cap - n);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            error = errno;
            break;
        }
        n += (size_t)got;
        if (got == 0 || n < *cap)
            break;
    }
    close(fd);
    *len = n;
    return error;
}

/* Whether a status text is kept: it has a VmLck line, and VmLck is not 0 (unless all). */
static int
scan_keeps(const char *text, size_t len, int include_unlocked)
{
    const char *at = memmem(text, len, "\nVmLck:", 7);
    if (at == NULL)
        return 0; /* a kernel thread or a zombie: no memory of its own */
    if (include_unlocked)
        return 1;
    const char *p = at + 7, *end = text + len;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    return !(p < end && *p == '0' && (p + 1 == end || p[1] == ' ' || p[1] == '\t'
                                      || p[1] == '\n'));
}

static void *
scan_share(void *arg)
{
    ScanShare *share = arg;
    ScanJob *job = share->job;
    size_t cap = SCAN_READ_SIZE, len = 0, i;
    char *buf = malloc(cap);
    if (buf == NULL) {
        share->error = SCAN_NO_MEMORY;
        __atomic_store_n(&job->next, job->npids, __ATOMIC_RELAXED);
        return NULL;
    }
    while ((i = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED)) < job->npids) {
        int pid = job->pids[i];
        int error = scan_read_status(pid, &buf, &cap, &len);
        if (error == ENOENT || error == ESRCH || error == EACCES || error == EPERM)
            continue; /* gone since the listing, or hidden (hidepid) */
        if (error == 0 && !scan_keeps(buf, len, job->include_unlocked))
            continue;
        if (error == 0 && share->nkept == share->cap) {
            size_t more = share->cap ? share->cap * 2 : 16;
            ScanKept *bigger = realloc(share->kept, more * sizeof *bigger);
            if (bigger == NULL)
                error = SCAN_NO_MEMORY;
            else {
                share->kept = bigger;
                share->cap = more;
            }
        }
        char *text = error == 0 ? malloc(len ? len : 1) : NULL;
        if (error == 0 && text == NULL)
            error = SCAN_NO_MEMORY;
        if (error != 0) {
            share->error = error;
            share->error_pid = pid;
            __atomic_store_n(&job->next, job->npids, __ATOMIC_RELAXED); /* all stop */
            break;
        }
        memcpy(text, buf, len);
        share->kept[share->nkept++] = (ScanKept){pid, len, text};
    }
    free(buf);
    return NULL;
}

/* The numeric names of /proc, into *pids (malloc'd); 0, an errno value or SCAN_NO_MEMORY. */
static int
scan_list_proc(int **pids, size_t *npids)
{
    DIR *dir = opendir("/proc");
    if (dir == NULL)
        return errno;
    size_t n = 0, cap = 1024;
    int *out = malloc(cap * sizeof *out), error = 0;
    struct dirent *entry;
    while (out != NULL) {
        errno = 0;
        if ((entry = readdir(dir)) == NULL) {
            error = errno;
            break;
        }
        const char *name = entry->d_name;
        long pid = 0;
        for (; *name >= '0' && *name <= '9' && pid <= INT_MAX; name++)
            pid = pid * 10 + (*name - '0');
        if (*name != '\0' || name == entry->d_name || pid > INT_MAX)
            continue; /* not a process: self, sys, meminfo... */
        if (n == cap) {
            int *bigger = realloc(out, cap * 2 * sizeof *out);
            if (bigger == NULL) {
                free(out);
                out = NULL;
                break;
            }
            out = bigger;
            cap *= 2;
        }
        out[n++] = (int)pid;
    }
    closedir(dir);
    if (out == NULL)
        return SCAN_NO_MEMORY;
    if (error != 0) {
        free(out);
        return error;
    }
    *pids = out;
    *npids = n;
    return 0;
}

/* Raises what a failed scan met: MemoryError, or OSError(errno, strerror, path). */
static void
scan_raise(int error, int pid)
{
    if (error == SCAN_NO_MEMORY) {
        PyErr_NoMemory();
        return;
    }
    char path[32];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%d/status", pid);
    else
        snprintf(path, sizeof path, "/proc");
    errno = error;
    PyErr_SetFromErrnoWithFilename(PyExc_OSError, path);
}

/* Runs the shares: shares[1..] on threads with every signal blocked, shares[0] on the
 * caller's thread, which takes what a thread that could not start would have taken;
 * returns once all are joined. */
static void
scan_run(ScanShare *shares, size_t nshares)
{
    pthread_t threads[SCAN_MAX_THREADS];
    int started[SCAN_MAX_THREADS] = {0};
    pthread_attr_t attr;
    int have_attr = pthread_attr_init(&attr) == 0;
    if (have_attr) /* a small stack: cheaper to make, and to lock under mlockall(MCL_FUTURE) */
        (void)pthread_attr_setstacksize(&attr, PTHREAD_STACK_MIN + SCAN_STACK_SIZE);
    sigset_t all, old;
    sigfillset(&all);
    int masked = nshares > 1 && pthread_sigmask(SIG_SETMASK, &all, &old) == 0;
    for (size_t k = 1; k < nshares && masked; k++)
        started[k] = pthread_create(&threads[k], have_attr ? &attr : NULL, scan_share,
                                    &shares[k]) == 0;
    if (masked)
        (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (have_attr)
        (void)pthread_attr_destroy(&attr);
    scan_share(&shares[0]);
    for (size_t k = 1; k < nshares; k++)
        if (started[k])
            (void)pthread_join(threads[k], NULL);
}

static PyObject *
proc_status_scan(PyObject *Py_UNUSED(module), PyObject *args)
{
    int include_unlocked, nthreads;
    if (!PyArg_ParseTuple(args, "pi:proc_status_scan", &include_unlocked, &nthreads))
        return NULL;
    if (nthreads < 1 || nthreads > SCAN_MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "threads must be from 1 to %d, not %d",
                     SCAN_MAX_THREADS, nthreads);
        return NULL;
    }
    int *pids = NULL, error;
    size_t npids = 0, nshares = 0;
    ScanJob job;
    ScanShare shares[SCAN_MAX_THREADS];
    Py_BEGIN_ALLOW_THREADS
    error = scan_list_proc(&pids, &npids);
    if (error == 0) {
        nshares = npids / SCAN_MIN_SHARE; /* threads pay off from a few dozen processes */
        nshares = nshares < 1 ? 1 : nshares > (size_t)nthreads ? (size_t)nthreads : nshares;
        job = (ScanJob){.pids = pids, .npids = npids, .include_unlocked = include_unlocked};
        for (size_t k = 0; k < nshares; k++)
            shares[k] = (ScanShare){.job = &job};
        scan_run(shares, nshares);
    }
    Py_END_ALLOW_THREADS
    free(pids);
    PyObject *out = NULL;
    if (error != 0)
        scan_raise(error, 0);
    for (size_t k = 0; k < nshares && error == 0; k++)
        if (shares[k].error != 0) {
            error = shares[k].error;
            scan_raise(error, shares[k].error_pid);
        }
    if (error == 0 && PyErr_CheckSignals() == 0)
        out = PyList_New(0);
    for (size_t k = 0; k < nshares; k++) {
        for (size_t i = 0; i < shares[k].nkept; i++) {
            ScanKept *kept = &shares[k].kept[i];
            if (out != NULL) {
                PyObject *item = Py_BuildValue("(iy#)", kept->pid, kept->text,
                                               (Py_ssize_t)kept->len);
                if (item == NULL || PyList_Append(out, item) < 0)
                    Py_CLEAR(out);
                Py_XDECREF(item);
            }
            free(kept->text);
        }
        free(shares[k].kept);
    }
    return out;
}
#endif /* __linux__ */

static PyMethodDef speedups_functions[] = {
    {"try_call", (PyCFunction)(void (*)(void))mutex_try_call, METH_FASTCALL,
     "try_call(mutex, fn, *args) -> bool: fn(*args) under the mutex if it is free now."},
#ifdef __linux__
    {"proc_status_scan", proc_status_scan, METH_VARARGS,
     "proc_status_scan(include_unlocked, threads) -> [(pid, status), ...]: the processes "
     "whose /proc/PID/status has a VmLck line, not 0 unless include_unlocked."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_methods = speedups_functions,
    .m_name = "memlock._speedups",
    .m_doc = "Optional C fast path of memlock.lock() (see _speedups.c).",
    .m_size = 0,
    .m_slots = speedups_slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&speedups_module);
}
