"""The optional C module (``_speedups.c``), loaded once for the modules that use it.

``speedups`` is None when the install did not build it (no C compiler: the wheel
is then pure Python), when ``AIOLOGSHIP_PURE_PYTHON`` is set to anything but ""
or "0", or when the build is of another version of ``_speedups.c`` (``API``: an
editable install not rebuilt since); every caller then runs the Python it mirrors.
"""

from __future__ import annotations

import os
from types import ModuleType

# _speedups.c's SPEEDUPS_API: what this Python expects of it.
API = 1


def _load() -> ModuleType | None:
    if os.environ.get("AIOLOGSHIP_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _speedups
    except ImportError:
        return None
    if getattr(_speedups, "API", None) != API:
        return None
    return _speedups


speedups = _load()
