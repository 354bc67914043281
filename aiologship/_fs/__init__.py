"""Destinations: a URI -> a ``pyarrow.fs.FileSystem`` and a base path.

Modules: ``_resolve`` (URI -> filesystem), ``_redact`` (secrets out of URIs and
messages), ``_hdfs/`` (hdfs:// targets, the driver table, one module per driver).

Layer rule: imports only ``aiologship._config`` / ``aiologship._exceptions``;
never ``_logging``, ``_copy``, ``_copiers``, the manager or Ray. pyarrow loads
inside the functions that open a filesystem (they run in worker threads).

Contract used by the copy engine (``aiologship._copy``)::

    dest = resolve_destination(uri, hdfs_driver=HdfsDriver.AUTO, user=None)
    dest.filesystem      # pyarrow.fs.FileSystem (blocking: call it in a worker thread)
    dest.base_path       # path inside that filesystem, no trailing slash
    dest.uri             # the URI with credentials redacted (safe for logs/status/errors)
    dest.can_append      # True where open_append_stream works (local, HDFS)

``resolve_destination`` itself may block (it may connect): call it in a worker
thread. It raises ``DestinationError`` (URI redacted) or ``ConfigError``.
``normalize_destination`` checks the syntax only and never blocks.
``scrub(text)`` removes secrets from text a server or a filesystem library sent.
"""

from ._redact import redact, scrub
from ._resolve import Destination, normalize_destination, resolve_destination

__all__ = ["Destination", "normalize_destination", "redact", "resolve_destination", "scrub"]
