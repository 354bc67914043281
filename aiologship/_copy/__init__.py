"""The copy engine: periodic, incremental, resumable copies of globbed files.

Layer rule: imports ``aiologship._fs``, ``_config``, ``_exceptions``; never the
manager or Ray coordination.
"""
