"""Where a copy engine runs, and who may run it.

- ``_backends``: the :class:`Backend` protocol ``CopyOperation`` drives
  (start / flush / stop / close / release / status / skipped) and the backend the
  manager holds, which asks the gate and picks one of:
- ``SkippedBackend`` (copies disabled here), ``HostLockBackend`` (``_host_copier``:
  the engine on this process's runtime while it holds the host lock), ``RayBackend``
  (``_ray_copier``: the detached copier actor of the copy).
- ``_coordination``: the role gate (Ray head / worker / standalone,
  ``RAY_DISABLE_HDFS_COPY``) and the host file lock.

Layer rule: may import ``aiologship._copy`` (the engine, its spec and status),
``_config``, ``_runtime``, ``_exceptions``; never the manager, the operation
handle, ``_logging`` or the CLI. The only room below the public surface that
imports Ray, and only inside functions (importing it costs about a second).
"""

from ._backends import Backend, CoordinatedBackend
from ._coordination import CopyGate, copy_gate
from ._ray_copier import list_copies, stop_copy

__all__ = ["Backend", "CoordinatedBackend", "CopyGate", "copy_gate", "list_copies", "stop_copy"]
