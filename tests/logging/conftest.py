"""Fixtures of the logging tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiologship._logging import _context


@pytest.fixture
def clean_context() -> Iterator[None]:
    """No context bound and the process's field sources as they were, after the
    test (sync tests share the main thread's context)."""
    token = _context._current.set(())
    saved = _context._sources
    yield
    _context._current.reset(token)
    _context._sources = saved
