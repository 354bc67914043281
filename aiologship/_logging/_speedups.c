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
#define SPEEDUPS_API 1
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <math.h>
#include <stddef.h>

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

/* Set by configure_logger() from _logger at import (log_fast). */
static PyObject *context_var;     /* _context._current */
static PyObject *context_module;  /* _context (its _sources) */
static PyObject *plain_loggers;   /* _logger._plain_loggers: {Logger class: bool} */
static PyObject *classify_logger; /* _logger._classify_logger(cls) -> bool */
static PyObject *logging_dict;    /* the logging module's namespace */
static PyObject *log_record_class; /* logging.LogRecord */
static PyObject *source_pairs;     /* _context.source_pairs */
/* s_cache: "_cache", of a Logger (its levels) and of a _Clock (its second). */
static PyObject *s_logger, *s_cache, *s_is_enabled_for, *s_sources, *s_fields,
    *s_record_factory, *s_srcfile, *s_sole, *s_source_pairs;

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

/* cache[type(obj)], asking classify(type(obj)) (which fills the cache) on a
 * miss: 1 plain, 0 not, -1 error. */
static int
class_is_plain(PyObject *cache, PyObject *classify_fn, PyObject *obj)
{
    PyObject *cls = (PyObject *)Py_TYPE(obj);
    PyObject *plain = PyDict_GetItemWithError(cache, cls); /* borrowed */
    if (plain != NULL)
        return PyObject_IsTrue(plain);
    if (PyErr_Occurred())
        return -1;
    PyObject *r = PyObject_CallOneArg(classify_fn, cls);
    int is_plain = r == NULL ? -1 : PyObject_IsTrue(r);
    Py_XDECREF(r);
    return is_plain;
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
            int is_plain = class_is_plain(plain_cache, classify, h);
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

/* The caller of the level method: `depth` frames above the Python frame that
 * called us (2 above _emit, 1 above the level method itself). */
static PyObject *
caller_frame(int depth)
{
    PyFrameObject *f = PyEval_GetFrame(); /* borrowed */
    if (f == NULL)
        Py_RETURN_NONE;
    Py_INCREF(f);
    for (int i = 0; i < depth; i++) {
        PyFrameObject *back = PyFrame_GetBack(f);
        Py_DECREF(f);
        if (back == NULL)
            Py_RETURN_NONE;
        f = back;
    }
    return (PyObject *)f;
}

/* _queue.py_emit_captured: 1 queued (or no sink wants it), 0 the record path's,
 * -1 error. depth: where the caller's frame is (caller_frame). */
static int
emit_impl(PyObject *logger, PyObject *level, PyObject *msg, PyObject *args, PyObject *fields,
          PyObject *extra, int depth)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++) {
        if (!is_immutable(PyTuple_GET_ITEM(args, i)))
            return 0;
    }
    PyObject *sinks = direct_sinks_impl(logger, level);
    if (sinks == NULL)
        return -1;
    if (sinks == Py_None) {
        Py_DECREF(sinks);
        return 0;
    }
    Py_ssize_t n = PyList_GET_SIZE(sinks);
    if (n == 0) {
        Py_DECREF(sinks);
        return 1;
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
        /* What the collector would do on its first look at them: neither tuple
         * can be part of a cycle (args holds only the atomic types is_immutable
         * lets through; item holds those, args and the fields), so the queue
         * costs the next collections nothing. */
        PyObject_GC_UnTrack(args);
        PyObject_GC_UnTrack(item);
    } else {
        PyObject *frame = caller_frame(depth);
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
    return 1;

fail:
    Py_XDECREF(item);
    Py_XDECREF(merged);
    Py_XDECREF(first_index);
    Py_DECREF(sinks);
    return -1;
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
    if (!PyTuple_Check(argv[3]) || !PyTuple_Check(argv[4])) {
        PyErr_SetString(PyExc_TypeError, "emit_captured: args and fields are tuples");
        return NULL;
    }
    int r = emit_impl(argv[0], argv[1], argv[2], argv[3], argv[4], argv[5], 2);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

/* Logger's level methods before their Python body (see _logger.Logger.info):
 * log(adapter, level, msg, args, kwargs) -> True when done here (queued, or the
 * level is off, or no sink wants it), False when the Python path must run:
 * keyword arguments, a message that is not a str, context that needs a
 * snapshot, a logger or record factory of its own, a handler or argument that
 * needs a LogRecord. The same steps as Logger._emit, in C. */
static PyObject *
log_fast(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "log takes 5 arguments");
        return NULL;
    }
    if (context_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_speedups.configure_logger was not called");
        return NULL;
    }
    PyObject *adapter = argv[0], *level = argv[1], *msg = argv[2], *args = argv[3];
    PyObject *kwargs = argv[4];
    if (!PyTuple_Check(args) || !PyUnicode_CheckExact(msg) || !PyLong_CheckExact(level) ||
        (kwargs != Py_None && (!PyDict_Check(kwargs) || PyDict_GET_SIZE(kwargs))))
        Py_RETURN_FALSE;
    PyObject *logger = PyObject_GetAttr(adapter, s_logger);
    if (logger == NULL)
        return NULL;
    PyObject *fields = NULL, *own = NULL;
    int r = 0;
    /* A Logger class of its own (its isEnabledFor, its makeRecord): Python. */
    int is_plain = class_is_plain(plain_loggers, classify_logger, logger);
    if (is_plain <= 0) {
        r = is_plain;
        goto done;
    }
    /* Logger.isEnabledFor: disabled, else its per-level cache (filled by the
     * method on a miss, cleared by setLevel and logging.disable). */
    int t = attr_true(logger, s_disabled);
    if (t != 0) {
        r = t < 0 ? -1 : 1; /* disabled: nothing to do */
        goto done;
    }
    PyObject *cache = PyObject_GetAttr(logger, s_cache);
    if (cache == NULL) {
        r = -1;
        goto done;
    }
    PyObject *enabled = PyDict_Check(cache) ? PyDict_GetItemWithError(cache, level) : NULL;
    if (enabled != NULL) {
        t = PyObject_IsTrue(enabled);
    } else if (PyErr_Occurred()) {
        t = -1;
    } else {
        PyObject *v = PyObject_CallMethodOneArg(logger, s_is_enabled_for, level);
        t = v == NULL ? -1 : PyObject_IsTrue(v);
        Py_XDECREF(v);
    }
    Py_DECREF(cache);
    if (t <= 0) {
        r = t < 0 ? -1 : 1; /* below the level: nothing to do */
        goto done;
    }
    /* The bound context: a tuple (else it needs a snapshot: Python), no sources. */
    if (PyContextVar_Get(context_var, NULL, &fields) < 0) {
        r = -1;
        goto done;
    }
    if (fields == NULL || !PyTuple_CheckExact(fields))
        goto done;
    /* The sources' automatic fields, below the bound context (as _emit). */
    t = attr_true(context_module, s_sources);
    if (t < 0) {
        r = -1;
        goto done;
    }
    if (t) {
        PyObject *sole = PyObject_GetAttr(context_module, s_sole);
        PyObject *pairs = NULL;
        if (sole != NULL) {
            pairs = sole != Py_None ? PyObject_CallNoArgs(sole)
                                    : PyObject_CallNoArgs(source_pairs);
            Py_DECREF(sole);
        }
        int any = pairs == NULL ? -1 : PyObject_IsTrue(pairs);
        if (any > 0)
            Py_SETREF(fields, PyNumber_Add(pairs, fields)); /* pairs + fields */
        Py_XDECREF(pairs);
        if (any < 0 || fields == NULL) {
            r = -1;
            goto done;
        }
        if (!PyTuple_CheckExact(fields))
            goto done;
    }
    own = PyObject_GetAttr(adapter, s_fields);
    if (own == NULL) {
        r = -1;
        goto done;
    }
    if (!PyTuple_CheckExact(own))
        goto done;
    if (PyTuple_GET_SIZE(own)) {
        Py_SETREF(fields, PySequence_Concat(fields, own));
        if (fields == NULL) {
            r = -1;
            goto done;
        }
    }
    /* fast_path_ok: the stdlib's record factory, a source file to skip. */
    PyObject *factory = PyDict_GetItemWithError(logging_dict, s_record_factory);
    PyObject *srcfile = factory == NULL ? NULL : PyDict_GetItemWithError(logging_dict, s_srcfile);
    if (srcfile == NULL) {
        r = PyErr_Occurred() ? -1 : 0;
        goto done;
    }
    if (factory != log_record_class || srcfile == Py_None)
        goto done;
    r = emit_impl(logger, level, msg, args, fields, Py_None, 1);
done:
    Py_XDECREF(fields);
    Py_XDECREF(own);
    Py_DECREF(logger);
    if (r < 0)
        return NULL;
    return PyBool_FromLong(r);
}

static PyObject *
configure_logger(PyObject *module, PyObject *const *argv, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyDict_Check(argv[2])) {
        PyErr_SetString(PyExc_TypeError,
                        "configure_logger(context_var, context_module, plain_loggers, "
                        "classify_logger, logging_module, LogRecord)");
        return NULL;
    }
    PyObject *ns = PyModule_GetDict(argv[4]); /* borrowed */
    if (ns == NULL)
        return NULL;
    Py_XSETREF(context_var, Py_NewRef(argv[0]));
    Py_XSETREF(context_module, Py_NewRef(argv[1]));
    Py_XSETREF(plain_loggers, Py_NewRef(argv[2]));
    Py_XSETREF(classify_logger, Py_NewRef(argv[3]));
    Py_XSETREF(logging_dict, Py_NewRef(ns));
    Py_XSETREF(log_record_class, Py_NewRef(argv[5]));
    Py_XSETREF(source_pairs, PyObject_GetAttr(argv[1], s_source_pairs));
    if (source_pairs == NULL)
        return NULL;
    Py_RETURN_NONE;
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


/* ------------------------------------------------------------------------
 * CompiledText(segments, clock, millis, level_names, get_level_name, not_here)
 *
 * A %-style text format whose every field is a bare %s, as the function
 * _formatting._compile_text writes for it: called with a captured call, it
 * returns the line, newline included, or raises as that function does.
 * segments: str (literal text), int (a field: an index of the captured tuple,
 * or LEVELNAME / MESSAGE / ASCTIME) or a 1-tuple (key,) (a context or extra=
 * field, looked up as _formatting._extra_field does).
 */
#define F_LEVELNAME 100
#define F_MESSAGE 101
#define F_ASCTIME 102
#define ITEM_SIZE 15
#define MAX_PIECES 128

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *segments; /* tuple */
    PyObject *clock, *millis, *level_names, *get_level_name, *not_here;
    int uses_time;      /* asctime is among the fields */
} Compiled;

static PyObject *s_refresh, *empty, *newline;

/* The three pieces of asctime into out[0..2] (new references); -1 on error. */
static int
time_pieces(Compiled *self, PyObject *ct_obj, PyObject **out)
{
    double ct = PyFloat_AsDouble(ct_obj);
    if (ct == -1.0 && PyErr_Occurred())
        return -1;
    double whole = ct < 0 ? -floor(-ct) : floor(ct); /* int(ct): toward zero */
    PyObject *second = PyLong_FromDouble(whole);
    if (second == NULL)
        return -1;
    PyObject *cache = PyObject_GetAttr(self->clock, s_cache);
    if (cache == NULL || !PyTuple_Check(cache) || PyTuple_GET_SIZE(cache) != 3) {
        if (cache != NULL)
            PyErr_SetString(PyExc_TypeError, "_Clock._cache is a 3-tuple");
        Py_XDECREF(cache);
        Py_DECREF(second);
        return -1;
    }
    int same = PyObject_RichCompareBool(PyTuple_GET_ITEM(cache, 0), second, Py_EQ);
    if (same == 0) {
        Py_SETREF(cache, PyObject_CallMethodOneArg(self->clock, s_refresh, second));
        if (cache != NULL && (!PyTuple_Check(cache) || PyTuple_GET_SIZE(cache) != 3)) {
            PyErr_SetString(PyExc_TypeError, "_Clock._refresh returns a 3-tuple");
            Py_CLEAR(cache);
        }
    }
    Py_DECREF(second);
    if (same < 0 || cache == NULL) {
        Py_XDECREF(cache);
        return -1;
    }
    /* _MILLIS[int((ct - second) * 1000)] */
    double ms = (ct - whole) * 1000.0;
    ms = ms < 0 ? -floor(-ms) : floor(ms);
    PyObject *millis = PySequence_GetItem(self->millis, (Py_ssize_t)ms);
    if (millis == NULL) {
        Py_DECREF(cache);
        return -1;
    }
    out[0] = Py_NewRef(PyTuple_GET_ITEM(cache, 1));
    out[1] = millis;
    out[2] = Py_NewRef(PyTuple_GET_ITEM(cache, 2));
    Py_DECREF(cache);
    return 0;
}

/* _extra_field(extra, key): the last pair named key wins; absent: not_here(key). */
static PyObject *
extra_field(Compiled *self, PyObject *extra, PyObject *key)
{
    if (extra != Py_None) {
        if (!PyTuple_Check(extra)) {
            PyErr_SetString(PyExc_TypeError, "a captured call's extra is a tuple");
            return NULL;
        }
        for (Py_ssize_t i = PyTuple_GET_SIZE(extra) - 1; i >= 0; i--) {
            PyObject *pair = PyTuple_GET_ITEM(extra, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_TypeError, "a captured call's extra holds pairs");
                return NULL;
            }
            int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(pair, 0), key, Py_EQ);
            if (eq < 0)
                return NULL;
            if (eq)
                return Py_NewRef(PyTuple_GET_ITEM(pair, 1));
        }
    }
    PyErr_SetObject(self->not_here, key);
    return NULL;
}

static PyObject *
level_name(Compiled *self, PyObject *level)
{
    PyObject *name = PyDict_GetItemWithError(self->level_names, level); /* borrowed */
    if (name == NULL && PyErr_Occurred())
        return NULL;
    if (name != NULL) {
        int t = PyObject_IsTrue(name);
        if (t < 0)
            return NULL;
        if (t)
            return Py_NewRef(name);
    }
    return PyObject_CallOneArg(self->get_level_name, level);
}

static PyObject *
compiled_call(PyObject *op, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    Compiled *self = (Compiled *)op;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "a compiled format takes one captured call");
        return NULL;
    }
    PyObject *item = argv[0];
    if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != ITEM_SIZE) {
        PyErr_SetString(PyExc_ValueError, "not a captured call (a 15-tuple)");
        return NULL;
    }
    PyObject *msg = PyTuple_GET_ITEM(item, 3), *args = PyTuple_GET_ITEM(item, 4);
    /* message = msg % args if args else msg: always, as record.message is */
    int has_args = PyObject_IsTrue(args);
    if (has_args < 0)
        return NULL;
    PyObject *message = has_args ? PyNumber_Remainder(msg, args) : Py_NewRef(msg);
    if (message == NULL)
        return NULL;

    /* As the Python function: the message, then asctime, then every field's
     * value in order, and only then str() of each (f"{v!s}"): the same
     * exception when more than one step would raise. */
    PyObject *buf[MAX_PIECES];
    PyObject *clock[3] = {NULL, NULL, NULL};
    int is_value[MAX_PIECES];
    Py_ssize_t k = 0;
    PyObject *line = NULL;
    if (self->uses_time && time_pieces(self, PyTuple_GET_ITEM(item, 5), clock) < 0)
        goto done;
    Py_ssize_t n = PyTuple_GET_SIZE(self->segments);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *seg = PyTuple_GET_ITEM(self->segments, i);
        PyObject *value;
        is_value[k] = 0;
        if (PyUnicode_CheckExact(seg)) {
            buf[k++] = Py_NewRef(seg);
            continue;
        }
        if (PyTuple_CheckExact(seg)) {
            value = extra_field(self, PyTuple_GET_ITEM(item, ITEM_SIZE - 1),
                                PyTuple_GET_ITEM(seg, 0));
        } else {
            long code = PyLong_AsLong(seg);
            if (code == F_ASCTIME) {
                for (int j = 0; j < 3; j++) {
                    is_value[k] = 0;
                    buf[k++] = Py_NewRef(clock[j]);
                }
                continue;
            }
            if (code == F_MESSAGE)
                value = Py_NewRef(message);
            else if (code == F_LEVELNAME)
                value = level_name(self, PyTuple_GET_ITEM(item, 2));
            else
                value = Py_NewRef(PyTuple_GET_ITEM(item, code)); /* checked at init */
        }
        if (value == NULL)
            goto done;
        is_value[k] = 1;
        buf[k++] = value;
    }
    for (Py_ssize_t i = 0; i < k; i++) {
        if (is_value[i]) {
            PyObject *text = PyObject_Str(buf[i]);
            if (text == NULL)
                goto done;
            Py_SETREF(buf[i], text);
        }
    }
    buf[k++] = Py_NewRef(newline);
    PyObject *pieces = PyTuple_New(k);
    if (pieces == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < k; i++)
        PyTuple_SET_ITEM(pieces, i, buf[i]);
    k = 0; /* the tuple owns them */
    line = PyUnicode_Join(empty, pieces);
    Py_DECREF(pieces);
done:
    while (k > 0)
        Py_DECREF(buf[--k]);
    for (int j = 0; j < 3; j++)
        Py_XDECREF(clock[j]);
    Py_DECREF(message);
    return line;
}

static PyObject *
compiled_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *segments, *clock, *millis, *level_names, *get_level_name, *not_here;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "CompiledText takes positional arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!OOO!OO:CompiledText", &PyTuple_Type, &segments, &clock,
                          &millis, &PyDict_Type, &level_names, &get_level_name, &not_here))
        return NULL;
    Py_ssize_t pieces = 1;
    int uses_time = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(segments); i++) {
        PyObject *seg = PyTuple_GET_ITEM(segments, i);
        int ok = PyUnicode_CheckExact(seg) ||
                 (PyTuple_CheckExact(seg) && PyTuple_GET_SIZE(seg) == 1);
        if (PyLong_CheckExact(seg)) {
            long code = PyLong_AsLong(seg);
            ok = (code >= 1 && code < ITEM_SIZE - 1) || code == F_LEVELNAME ||
                 code == F_MESSAGE || code == F_ASCTIME;
            pieces += code == F_ASCTIME ? 3 : 1;
            uses_time |= code == F_ASCTIME;
        } else {
            pieces += 1;
        }
        if (!ok) {
            PyErr_Format(PyExc_ValueError, "CompiledText: bad segment %R", seg);
            return NULL;
        }
    }
    if (pieces > MAX_PIECES) {
        PyErr_SetString(PyExc_ValueError, "CompiledText: too many fields");
        return NULL;
    }
    Compiled *self = (Compiled *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->vectorcall = compiled_call;
    self->segments = Py_NewRef(segments);
    self->clock = Py_NewRef(clock);
    self->millis = Py_NewRef(millis);
    self->level_names = Py_NewRef(level_names);
    self->get_level_name = Py_NewRef(get_level_name);
    self->not_here = Py_NewRef(not_here);
    self->uses_time = uses_time;
    return (PyObject *)self;
}

static int
compiled_traverse(Compiled *self, visitproc visit, void *arg)
{
    Py_VISIT(self->segments);
    Py_VISIT(self->clock);
    Py_VISIT(self->millis);
    Py_VISIT(self->level_names);
    Py_VISIT(self->get_level_name);
    Py_VISIT(self->not_here);
    return 0;
}

static int
compiled_clear(Compiled *self)
{
    Py_CLEAR(self->segments);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->millis);
    Py_CLEAR(self->level_names);
    Py_CLEAR(self->get_level_name);
    Py_CLEAR(self->not_here);
    return 0;
}

static void
compiled_dealloc(Compiled *self)
{
    PyObject_GC_UnTrack(self);
    compiled_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject CompiledType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "aiologship._logging._speedups.CompiledText",
    .tp_basicsize = sizeof(Compiled),
    .tp_dealloc = (destructor)compiled_dealloc,
    .tp_vectorcall_offset = offsetof(Compiled, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "A %s-only text format of a captured call, compiled.",
    .tp_traverse = (traverseproc)compiled_traverse,
    .tp_clear = (inquiry)compiled_clear,
    .tp_new = compiled_new,
};

static PyMethodDef methods[] = {
    {"emit_captured", (PyCFunction)(void (*)(void))emit_captured, METH_FASTCALL,
     "Queue a captured call for the aiologship sinks that alone would see it."},
    {"direct_sinks", (PyCFunction)(void (*)(void))direct_sinks, METH_FASTCALL,
     "The aiologship sinks a record would reach, or None."},
    {"log", (PyCFunction)(void (*)(void))log_fast, METH_FASTCALL,
     "A level method's call, done in C when nothing needs the Python path."},
    {"configure_logger", (PyCFunction)(void (*)(void))configure_logger, METH_FASTCALL,
     "Hand the module what log() reads of _context, _logger and logging."},
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
    INTERN(s_cache, "_cache");
    INTERN(s_logger, "logger");
    INTERN(s_is_enabled_for, "isEnabledFor");
    INTERN(s_sources, "_sources");
    INTERN(s_fields, "_fields");
    INTERN(s_record_factory, "_logRecordFactory");
    INTERN(s_srcfile, "_srcfile");
    INTERN(s_sole, "_sole");
    INTERN(s_source_pairs, "source_pairs");
    INTERN(s_refresh, "_refresh");
    INTERN(empty, "");
    INTERN(newline, "\n");
    if (PyType_Ready(&CompiledType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    /* _accel refuses a module whose API differs from the Python beside it (an
     * editable install's stale build): bump with any change of signature. */
    if (PyModule_AddIntConstant(m, "API", SPEEDUPS_API) < 0 ||
        PyModule_AddObjectRef(m, "CompiledText", (PyObject *)&CompiledType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
