"""Helpers shared by the Ray tests (importable from Ray workers too)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import pytest
import ray

from aiologship._copiers._ray_copier import NAMESPACE


def kill_copiers() -> None:
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == NAMESPACE:
            with contextlib.suppress(ValueError):
                ray.kill(ray.get_actor(entry["name"], namespace=NAMESPACE), no_restart=True)
    wait_for(lambda: not _copier_names(), timeout=60, what="copier actors to be gone")


def _copier_names() -> list[str]:
    return [
        e["name"]
        for e in ray.util.list_named_actors(all_namespaces=True)
        if e["namespace"] == NAMESPACE
    ]


def wait_for(
    condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``condition`` until truthy (returned) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def engine_factory() -> Any:
    """The real copy engine (aiologship._copy), passed to the copier actors."""
    from aiologship._copiers._host_copier import DEFAULT_ENGINE_FACTORY

    return DEFAULT_ENGINE_FACTORY
