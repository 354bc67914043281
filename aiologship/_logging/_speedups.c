/* aiologship._logging._speedups: the caller's side of a captured log call in C.
 *
 * Optional: the wheel builds it when a C compiler is there; without it (or with
 * AIOLOGSHIP_PURE_PYTHON=1) _queue.emit_captured, the Python function this
 * mirrors line for line, runs instead. tests/logging/test_speedups.py holds the
 * two to the same results.
 *
 * emit_captured(logger, level, msg, args, fields, extra) -> bool
 *   False: the record path must take the call (a mutable argument, or a
 *   handler or filter that needs a LogRecord). True: queued for every
 *   aiologship sink the stdlib would hand it to (none, if all are above level).
 *
 * direct_sinks(logger, level) -> list | None, as _queue.direct_sinks.
 *
 * Everything this does not do itself it calls back into Python for: the class
 * check of a handler type not seen before, _records.capture when a sink prints
 * more than time, level, name and message, SinkHandler.put_captured when the
 * queue is closed or past its high-water mark.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <time.h>

static PyObject *s_disabled, *s_filters, *s_handlers, *s_level, *s_propagate, *s_parent,
    *s_queue, *s_needs, *s_index, *s_name, *s_items, *s_high_water, *s_closed,
    *s_wake_pending, *s_request_wake, *s_append, *s_put_captured, *s_put_failed;

/* Set by configure() from _queue at import. */
static PyObject *plain_cache;    /* _queue._direct: {handler class: bool} */
static PyObject *classify;       /* _queue._classify(cls) -> bool, fills the cache */
static PyObject *py_capture;     /* _records.capture */
static PyObject *py_time;        /* _records._time (time.time) */
static PyObject *unknown_file;   /* "(unknown file)" */
static PyObject *unknown_func;   /* "(unknown function)" */

static int
is_immutable(PyObject *v)
{
    /* _records.IMMUTABLE: exact types, as type(value) in IMMUTABLE */
    PyTypeObject *t = Py_TYPE(v);
    return t == &PyUnicode_Type || t == &PyLong_Type || t == &PyFloat_Type ||
           t == &PyBool_Type || v == Py_None || t == &PyBytes_Type || t == &PyComplex_Type;
}

/* Truth of getattr(obj, name); -1 on error. */
static int
attr_true(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* _queue.direct_sinks: a new list, a new reference to None, or NULL. */
static PyObject *
direct_sinks_impl(PyObject *logger, PyObject *level)
{
    int t = attr_true(logger, s_disabled);
    if (t != 0)
        goto none_or_error;
    t = attr_true(logger, s_filters);
    if (t != 0)
        goto none_or_error;

    PyObject *sinks = PyList_New(0);
    if (sinks == NULL)
        return NULL;
    int found = 0;
    Py_INCREF(logger);
    PyObject *c = logger;
    while (c != Py_None) {
        PyObject *handlers = PyObject_GetAttr(c, s_handlers);
        if (handlers == NULL)
            goto fail;
        PyObject *it = PyObject_GetIter(handlers);
        Py_DECREF(handlers);
        if (it == NULL)
            goto fail;
        PyObject *h;
        while ((h = PyIter_Next(it)) != NULL) {
            PyObject *cls = (PyObject *)Py_TYPE(h);
            PyObject *plain = PyDict_GetItemWithError(plain_cache, cls); /* borrowed */
            int is_plain;
            if (plain != NULL) {
                is_plain = PyObject_IsTrue(plain);
            } else if (PyErr_Occurred()) {
                is_plain = -1;
            } else {
                PyObject *r = PyObject_CallOneArg(classify, cls);
                is_plain = r == NULL ? -1 : PyObject_IsTrue(r);
                Py_XDECREF(r);
            }
            if (is_plain <= 0) {
                Py_DECREF(h);
                Py_DECREF(it);
                t = is_plain;
                goto none_or_error_c;
            }
            t = attr_true(h, s_filters);
            if (t != 0) {
                Py_DECREF(h);
                Py_DECREF(it);
                goto none_or_error_c;
            }
            found = 1;
            PyObject *hl = PyObject_GetAttr(h, s_level);
            int ge = hl == NULL ? -1 : PyObject_RichCompareBool(level, hl, Py_GE);
            Py_XDECREF(hl);
            if (ge > 0)
                ge = PyList_Append(sinks, h) == 0 ? 0 : -1;
            Py_DECREF(h);
            if (ge < 0) {
                Py_DECREF(it);
                goto fail;
            }
        }
        Py_DECREF(it);
        if (PyErr_Occurred())
            goto fail;
        t = attr_true(c, s_propagate);
        if (t < 0)
            goto fail;
        if (t == 0)
            break;
        PyObject *parent = PyObject_GetAttr(c, s_parent);
        if (parent == NULL)
            goto fail;
        Py_SETREF(c, parent);
    }
    Py_DECREF(c);
    if (found)
        return sinks;
    Py_DECREF(sinks);
    Py_RETURN_NONE;

none_or_error_c:
    Py_DECREF(c);
    Py_DECREF(sinks);
none_or_error:
    if (t < 0)
        return NULL;
    Py_RETURN_NONE;
fail:
    Py_DECREF(c);
    Py_DECREF(sinks);
    return NULL;
}

/* The raised exception, normalized, with its traceback; the error indicator is cleared. */
static PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
        Py_DECREF(tb);
    }
    Py_DECREF(type);
    return value;
#endif
}

/* SinkHandler.put_captured's usual case (open queue, below its high-water mark);
 * anything else is the Python method's. 0, or -1 with an exception set. */
static int
put(PyObject *sink, PyObject *item)
{
    PyObject *queue = PyObject_GetAttr(sink, s_queue);
    if (queue == NULL)
        return -1;
    PyObject *items = NULL, *hw = NULL, *r;
    int closed = attr_true(queue, s_closed);
    if (closed != 0)
        goto slow;
    items = PyObject_GetAttr(sink, s_items);
    hw = items == NULL ? NULL : PyObject_GetAttr(sink, s_high_water);
    if (hw == NULL)
        goto slow;
    Py_ssize_t high_water = PyLong_AsSsize_t(hw);
    Py_ssize_t queued = PyObject_Length(items);
    if (queued < 0 || (high_water == -1 && PyErr_Occurred()) || queued >= high_water)
        goto slow;
    r = PyObject_CallMethodOneArg(items, s_append, item);
    if (r == NULL)
        goto failed;
    Py_DECREF(r);
    int pending = attr_true(queue, s_wake_pending);
    if (pending < 0)
        goto failed;
    if (!pending) {
        r = PyObject_CallMethodNoArgs(queue, s_request_wake);
        if (r == NULL)
            goto failed;
        Py_DECREF(r);
    }
    Py_DECREF(items);
    Py_DECREF(hw);
    Py_DECREF(queue);
    return 0;

failed:
    /* After the append: as put_captured's except clause, handleError with the
     * exception as the one being handled (sys.exc_info() is what it prints). */
    Py_XDECREF(items);
    Py_XDECREF(hw);
    Py_DECREF(queue);
    if (PyErr_ExceptionMatches(PyExc_RecursionError) ||
        !PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyObject *error = take_exception();
    PyObject *before = PyErr_GetHandledException();
    PyErr_SetHandledException(error);
    r = PyObject_CallMethodOneArg(sink, s_put_failed, item);
    PyErr_SetHandledException(before);
    Py_XDECREF(before);
    Py_DECREF(error);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;

slow:
    Py_XDECREF(items);
    Py_XDECREF(hw);
    Py_DECREF(queue);
    if (PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_Clear(); /* the Python method meets it again and handles it */
    }
    r = PyObject_CallMethodOneArg(sink, s_put_captured, item);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The needs of every sink's queue, ORed (sinks of several managers). */
static long
needs_of(PyObject *sinks)
{
    long needs = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(sinks); i++) {
        PyObject *q = PyObject_GetAttr(PyList_GET_ITEM(sinks, i), s_queue);
        if (q == NULL)
            return -1;
        PyObject *n = PyObject_GetAttr(q, s_needs);
        Py_DECREF(q);
        if (n == NULL)
            return -1;
        long v = PyLong_AsLong(n);
        Py_DECREF(n);
        if (v == -1 && PyErr_Occurred())
            return -1;
        needs |= v;
    }
    return needs;
}

/* The caller of the level method: two frames above _emit, which called us. */
static PyObject *
caller_frame(void)
{
    PyFrameObject *f = PyEval_GetFrame(); /* borrowed: _emit's */
    if (f == NULL)
        Py_RETURN_NONE;
    Py_INCREF(f);
    for (int i = 0; i < 2; i++) {
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        if (back == NULL)
            Py_RETURN_NONE;
        f = back;
    }
    return (PyObject *)f;
}

static PyObject *
emit_captured(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "emit_captured takes 6 arguments");
        return NULL;
    }
    if (plain_cache == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.configure was not called");
        return NULL;
    }
    PyObject *logger = argv[0], *level = argv[1], *msg = argv[2], *args = argv[3];
    PyObject *fields = argv[4], *extra = argv[5];
    if (!PyTuple_Check(args) || !PyTuple_Check(fields)) {
        PyErr_SetString(PyExc_TypeError, "emit_captured: args and fields are tuples");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++) {
        if (!is_immutable(PyTuple_GET_ITEM(args, i)))
            Py_RETURN_FALSE;
    }
    PyObject *sinks = direct_sinks_impl(logger, level);
    if (sinks == NULL)
        return NULL;
    if (sinks == Py_None) {
        Py_DECREF(sinks);
        Py_RETURN_FALSE;
    }
    Py_ssize_t n = PyList_GET_SIZE(sinks);
    if (n == 0) {
        Py_DECREF(sinks);
        Py_RETURN_TRUE;
    }
    PyObject *merged = NULL, *item = NULL, *first_index = NULL;
    if (extra != Py_None && PyObject_IsTrue(extra)) {
        PyObject *pairs = PyDict_Check(extra) ? PyDict_Items(extra) : NULL;
        PyObject *tup = pairs == NULL ? NULL : PyList_AsTuple(pairs);
        Py_XDECREF(pairs);
        if (tup == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "emit_captured: extra is a dict");
            goto fail;
        }
        merged = PySequence_Concat(fields, tup);
        Py_DECREF(tup);
        if (merged == NULL)
            goto fail;
    } else {
        merged = Py_NewRef(fields);
    }
    if (PyTuple_GET_SIZE(merged) == 0)
        Py_SETREF(merged, Py_NewRef(Py_None));

    PyObject *first = PyList_GET_ITEM(sinks, 0);
    long needs = needs_of(sinks);
    if (needs == -1 && PyErr_Occurred())
        goto fail;
    first_index = PyObject_GetAttr(first, s_index);
    if (first_index == NULL)
        goto fail;
    if (needs == 0) {
        /* _records.capture with nothing needed */
        PyObject *name = PyObject_GetAttr(logger, s_name);
        if (name == NULL)
            goto fail;
        PyObject *now = PyObject_CallNoArgs(py_time);
        if (now == NULL) {
            Py_DECREF(name);
            goto fail;
        }
        item = PyTuple_New(15);
        if (item == NULL) {
            Py_DECREF(name);
            Py_DECREF(now);
            goto fail;
        }
        PyTuple_SET_ITEM(item, 0, Py_NewRef(first_index));
        PyTuple_SET_ITEM(item, 1, name);
        PyTuple_SET_ITEM(item, 2, Py_NewRef(level));
        PyTuple_SET_ITEM(item, 3, Py_NewRef(msg));
        PyTuple_SET_ITEM(item, 4, Py_NewRef(args));
        PyTuple_SET_ITEM(item, 5, now);
        PyTuple_SET_ITEM(item, 6, Py_NewRef(unknown_file));
        PyTuple_SET_ITEM(item, 7, PyLong_FromLong(0));
        PyTuple_SET_ITEM(item, 8, Py_NewRef(unknown_func));
        for (int i = 9; i < 14; i++)
            PyTuple_SET_ITEM(item, i, Py_NewRef(Py_None));
        PyTuple_SET_ITEM(item, 14, Py_NewRef(merged));
    } else {
        PyObject *frame = caller_frame();
        PyObject *needs_obj = PyLong_FromLong(needs);
        if (needs_obj == NULL) {
            Py_DECREF(frame);
            goto fail;
        }
        PyObject *cargs[8] = {first_index, logger, level, msg, args, frame, merged, needs_obj};
        item = PyObject_Vectorcall(py_capture, cargs, 8, NULL);
        Py_DECREF(frame);
        Py_DECREF(needs_obj);
        if (item == NULL)
            goto fail;
    }
    if (put(first, item) < 0)
        goto fail;
    for (Py_ssize_t i = 1; i < n; i++) {
        PyObject *sink = PyList_GET_ITEM(sinks, i);
        PyObject *index = PyObject_GetAttr(sink, s_index);
        if (index == NULL)
            goto fail;
        Py_ssize_t size = PyTuple_GET_SIZE(item);
        PyObject *copy = PyTuple_New(size);
        if (copy == NULL) {
            Py_DECREF(index);
            goto fail;
        }
        PyTuple_SET_ITEM(copy, 0, index);
        for (Py_ssize_t j = 1; j < size; j++)
            PyTuple_SET_ITEM(copy, j, Py_NewRef(PyTuple_GET_ITEM(item, j)));
        int r = put(sink, copy);
        Py_DECREF(copy);
        if (r < 0)
            goto fail;
    }
    Py_DECREF(item);
    Py_DECREF(merged);
    Py_DECREF(first_index);
    Py_DECREF(sinks);
    Py_RETURN_TRUE;

fail:
    Py_XDECREF(item);
    Py_XDECREF(merged);
    Py_XDECREF(first_index);
    Py_DECREF(sinks);
    return NULL;
}

static PyObject *
direct_sinks(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "direct_sinks takes 2 arguments");
        return NULL;
    }
    if (plain_cache == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.configure was not called");
        return NULL;
    }
    return direct_sinks_impl(argv[0], argv[1]);
}

static PyObject *
configure(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 4 || !PyDict_Check(argv[0])) {
        PyErr_SetString(PyExc_TypeError, "configure(cache, classify, capture, time)");
        return NULL;
    }
    Py_XSETREF(plain_cache, Py_NewRef(argv[0]));
    Py_XSETREF(classify, Py_NewRef(argv[1]));
    Py_XSETREF(py_capture, Py_NewRef(argv[2]));
    Py_XSETREF(py_time, Py_NewRef(argv[3]));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"emit_captured", (PyCFunction)(void (*)(void))emit_captured, METH_FASTCALL,
     "Queue a captured call for the aiologship sinks that alone would see it."},
    {"direct_sinks", (PyCFunction)(void (*)(void))direct_sinks, METH_FASTCALL,
     "The aiologship sinks a record would reach, or None."},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "Hand the module the Python objects it calls back."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_speedups", "The caller's side of a captured log call in C.", -1,
    methods, NULL, NULL, NULL, NULL,
};

#define INTERN(var, text)                                                                  \
    do {                                                                                   \
        if ((var = PyUnicode_InternFromString(text)) == NULL)                              \
            return NULL;                                                                   \
    } while (0)

PyMODINIT_FUNC
PyInit__speedups(void)
{
    INTERN(s_disabled, "disabled");
    INTERN(s_filters, "filters");
    INTERN(s_handlers, "handlers");
    INTERN(s_level, "level");
    INTERN(s_propagate, "propagate");
    INTERN(s_parent, "parent");
    INTERN(s_queue, "_queue");
    INTERN(s_needs, "needs");
    INTERN(s_index, "index");
    INTERN(s_name, "name");
    INTERN(s_items, "_items");
    INTERN(s_high_water, "_high_water");
    INTERN(s_closed, "closed");
    INTERN(s_wake_pending, "wake_pending");
    INTERN(s_request_wake, "request_wake");
    INTERN(s_append, "append");
    INTERN(s_put_captured, "put_captured");
    INTERN(s_put_failed, "_put_failed");
    INTERN(unknown_file, "(unknown file)");
    INTERN(unknown_func, "(unknown function)");
    return PyModule_Create(&module_def);
}
