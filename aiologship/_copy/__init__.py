"""The copy engine: periodic, incremental, resumable copies of globbed files.

Modules: ``_spec`` (what to copy), ``_scan`` (glob + stat), ``_source`` (safe
opens under ``root_dir``), ``_identity`` (which file is which: renames, rewrites),
``_manifest`` (what is shipped), ``_transfer`` (one file to the destination,
retried), ``_tempwatch`` (temporary files of failed transfers, swept each cycle),
``_statedir`` (every name in the state dir, and the locks), ``_status`` (status
types, no pyarrow), ``_engine`` (``CopyEngine``: open, the loop, flush, stop),
``_cycle`` (one cycle), ``_plan`` (what a cycle ships), ``_ship`` (the worker
pool), ``_encode`` (gzip members / zstd frames of compressed copies),
``_template`` (destination templates: each file's partition),
``_engine_state`` (the engine's lock, manifest and status.json),
``_engine_status`` (the counters behind ``status()``), ``_rollstate`` (which
source ranges are in which roll file), ``_rollup`` (roll-up of sealed files:
plan, append, recovery, ledger), ``_rollrun`` (the roll-up part of a cycle).

Layer rule: imports ``aiologship._fs``, ``_config``, ``_exceptions``; never
``_logging``, ``_copiers``, the manager or Ray.

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

from ._spec import Compression, CopySpec, RollUp, Scope
from ._status import CopyState, CopyStatus, CycleResult

if TYPE_CHECKING:
    from ._engine import CopyEngine


def __getattr__(name: str) -> Any:
    # The engine imports pyarrow (~100 ms, holding the GIL); validating a CopySpec or
    # reading a status must not, so the engine loads on first use, where it runs.
    if name == "CopyEngine":
        from . import _engine

        return getattr(_engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Compression",
    "CopyEngine",
    "CopySpec",
    "CopyState",
    "CopyStatus",
    "CycleResult",
    "RollUp",
    "Scope",
]
