"""The copy engine: periodic, incremental, resumable copies of globbed files.

Layer rule: imports ``aiologship._fs``, ``_config``, ``_exceptions``; never the
manager or Ray coordination.

::

    spec = CopySpec.from_params(copy_name=..., path_patterns=[...], hdfs_destination=...)
    engine = CopyEngine(spec, state_dir=path)
    await engine.open()     # state dir, manifest, destination; raises ConfigError/CopyError
    await engine.run()      # cycles until stop(); the final cycle runs before it returns
    await engine.flush()    # one cycle now -> CycleResult
    await engine.stop()
    engine.status()         # CopyStatus
"""

from typing import TYPE_CHECKING, Any

from ._spec import CopySpec, Scope
from ._status import CopyState, CopyStatus, CycleResult

if TYPE_CHECKING:
    from ._operation import CopyEngine


def __getattr__(name: str) -> Any:
    # The engine imports pyarrow (~100 ms, holding the GIL); validating a CopySpec or
    # reading a status must not, so the engine loads on first use, where it runs.
    if name == "CopyEngine":
        from . import _operation

        return getattr(_operation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CopyEngine", "CopySpec", "CopyState", "CopyStatus", "CycleResult", "Scope"]
