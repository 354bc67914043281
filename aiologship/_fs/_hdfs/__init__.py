"""hdfs:// destinations: pick a driver and open a ``pyarrow.fs.FileSystem``.

Drivers (``HdfsDriver``):

- ``native``: the hdfs-native client (no JVM), wrapped as a ``pyarrow.fs`` handler.
- ``libhdfs``: ``pyarrow.fs.HadoopFileSystem`` where libhdfs, a JVM and a Hadoop
  CLASSPATH are present (checked in a subprocess, so a broken JVM cannot crash us).
- ``webhdfs``: HTTP to the NameNode web port (``dfs.namenode.http-address`` from
  ``HADOOP_CONF_DIR``, else port 9870 on the URI's host).
- ``auto``: native, the driver tested against a real cluster. libhdfs is opt-in
  (``hdfs_driver="libhdfs"``): it runs a JVM inside this process and no test here
  runs it against a cluster.

What is passed through to every driver:

- ``HADOOP_CONF_DIR`` (or ``HADOOP_HOME/etc/hadoop``): ``core-site.xml`` and
  ``hdfs-site.xml``, so ``hdfs://nameservice/path`` resolves HA name services and
  ``hdfs:///path`` uses ``fs.defaultFS``.
- the user: ``user@`` in the URI, else the ``user`` argument, else ``HADOOP_USER_NAME``,
  else the OS user. hdfs-native reads ``HADOOP_USER_NAME`` from the process environment
  when it connects, so a ``user`` for the native driver is set there (one user per
  process: a conflicting value is refused, not silently overridden).
- Kerberos: the ticket cache ``KRB5CCNAME``; delegation tokens from
  ``HADOOP_TOKEN_FILE_LOCATION`` (native, libhdfs) or ``?delegation=`` (webhdfs).

Every error leaves as ``DestinationError`` with the URI redacted.

Modules: ``_target`` (the model: :class:`HdfsTarget`, Hadoop configuration),
``_drivers`` (the driver table and :func:`open_hdfs`), one module per driver
(``_native``, ``_webhdfs``, ``_libhdfs``).

Layer rule: imports ``aiologship._config``, ``_exceptions`` and ``_fs._redact``;
drivers import ``_target``; only ``_drivers`` imports the drivers (lazily).
"""

from ._drivers import DRIVERS, open_hdfs
from ._target import HdfsTarget, parse_target

__all__ = ["DRIVERS", "HdfsTarget", "open_hdfs", "parse_target"]
