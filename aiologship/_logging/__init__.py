"""Logging that never blocks the caller's event loop, in the order a record
travels:

- ``_logger``: ``Logger``, the stdlib ``LoggerAdapter`` users hold; the fast path
  captures a call as a flat tuple of immutable values (``_records``).
- ``_context``: the fields merged into every record at the call: automatic-field
  sources, the ``contextvars`` context (``aiologship.context``), ``Logger.bind``.
- ``_queue``: ``RecordQueue`` (bounded, the overflow policy) and ``SinkHandler``,
  the ``logging.Handler`` whose ``emit()`` enqueues in O(1) and never raises.
- ``_pump``: on the manager's runtime loop, drains the queue in batches, builds
  the ``LogRecord`` s and formats them.
- ``_formatting``: text and JSON formatters (a missing text field prints ``-``;
  JSON lines of captured calls are made without a ``LogRecord``).
- ``_writers``: ``FileWriter``, batched file writes, rotation and retention.
- ``_streams``: ``StreamWriter``, a sink on stdout, stderr, a text stream or a
  descriptor: the pump hands it batches in O(1); a thread of its own writes them,
  so a stalled reader stalls neither a caller's loop nor the pump.
- ``_console``: when to colour a stream (terminal, ``NO_COLOR``, ``FORCE_COLOR``)
  and the formatter that colours by level.
- ``_capture``: whole-process mode, foreign ``StreamHandler`` s replaced by
  stream sinks for a manager's lifetime and restored.
- ``_records``: building records from captured calls.
- ``_pipeline``: ``Pipeline``, one manager's queue, pump, runtime and counters
  (``stats()``, ``flush()``, the drain at close, the reset after a fork).
- ``_sinks``: ``FileSinks``, one manager's sinks and their writers, one writer
  per real path and one per stream.
- ``_sources``: automatic fields (Ray ids, OpenTelemetry trace ids) and the
  holds a manager keeps on them; read through ``sys.modules``, never imported.
- ``_speedups`` (``_speedups.c``, optional, loaded by ``_accel``): C twins of the
  per-record work of ``_logger``, ``_queue`` and ``_formatting``; each of those
  keeps the Python it replaces and falls back to it.

Layer rule: may import ``_config``, ``_exceptions`` (and ``_runtime``); never
``_copy``, ``_copiers``, ``_fs``, the manager or Ray. The manager composes these
parts; ``Logger`` reaches it only through the ``SinkRegistry`` protocol (which
the manager answers by delegating to ``FileSinks`` after its closed check).
"""
