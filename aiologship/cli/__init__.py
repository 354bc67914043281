"""The ``aiologship`` command line (console script ``aiologship.cli:main``, also
``python -m aiologship.cli``).

Modules: ``_main`` (``main()``, argument dispatch, the one-line error report),
one module per command: ``copy``, ``status``, ``demo``.

Layer rule: the top, beside the public surface: may import the public package,
``_copy`` (the engine runs in the CLI's own process), ``_fs``, ``_config`` and
``_exceptions``; nothing imports it.
"""

from ._main import build_parser, main

__all__ = ["build_parser", "main"]
