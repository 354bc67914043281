"""Fixtures shared by the copy engine's tests: an engine environment on local folders."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.copy.test_engine import Env


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    yield e
    for engine in e.engines:
        await engine.stop(final_cycle=False)
