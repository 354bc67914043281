"""pytest fixtures, registered through the ``pytest11`` entry point.

- ``log_manager``: a ``LogManager`` whose sinks and state live in the test's
  ``tmp_path``, closed after the test (async fixture: use it from sync or async tests).
- ``log_records``: records collected as dictionaries, context fields included
  (``aiologship.testing``; check them with ``testing.assert_fields``).
- ``local_destination``: a temporary destination folder for copy tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from . import LogManager
from .testing import capture_logs

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - pytest-asyncio is a test dependency
    pytest_asyncio = None  # type: ignore[assignment]


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def log_manager(tmp_path: Path) -> AsyncIterator[LogManager]:
        """A LogManager for one test: state under tmp_path, closed afterwards."""
        async with LogManager(state_dir=tmp_path / "aiologship-state") as manager:
            yield manager


@pytest.fixture
def log_records() -> Iterator[list[dict[str, Any]]]:
    """Every record that reaches the root logger during the test, as dictionaries
    with their context fields (``aiologship.testing.assert_fields`` checks them)."""
    with capture_logs() as records:
        yield records


@pytest.fixture
def local_destination(tmp_path: Path) -> Path:
    """An empty folder to use as a copy destination."""
    path = tmp_path / "destination"
    path.mkdir()
    return path
