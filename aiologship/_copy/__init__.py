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

from ._operation import CopyEngine, CopyState, CopyStatus, CycleResult
from ._spec import CopySpec, Scope

__all__ = ["CopyEngine", "CopySpec", "CopyState", "CopyStatus", "CycleResult", "Scope"]
