"""Figures pushed to Ray's metrics agent (``ray.util.metrics``), so they appear in
Ray's own Prometheus endpoint (``ray_`` prefix) and its Grafana dashboards."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable
from typing import Any

from ._table import METRICS, Labels, Sample

_DEFS = {m.name: m for m in METRICS}
# How often a manager or a copier actor pushes its figures (Ray's agent exports
# them every metrics_report_interval_ms, 10 s by default).
PUSH_INTERVAL = 5.0


def push_interval() -> float:
    """``AIOLOGSHIP_RAY_METRICS_INTERVAL`` seconds (read at each wait), else 5;
    held between 0.1 and 3600."""
    try:
        seconds = float(os.environ.get("AIOLOGSHIP_RAY_METRICS_INTERVAL", PUSH_INTERVAL))
    except ValueError:
        seconds = PUSH_INTERVAL
    return min(max(0.1, seconds), 3600.0) if seconds == seconds else PUSH_INTERVAL


class RayReporter:
    """Gauges are set; counters grow by what they grew since the last push (a
    counter that went back, a restarted engine, starts over). One per process:
    every pusher shares the last values, so pushing more often never counts twice."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: dict[str, Any] = {}
        self._last: dict[tuple[str, Labels], float] = {}

    def push(self, samples: Iterable[Sample]) -> bool:
        """False (and nothing done) when Ray is not initialized in this process."""
        ray = sys.modules.get("ray")
        if ray is None or not ray.is_initialized():
            return False
        from ray.util import metrics

        with self._lock:
            for name, labels, value in samples:
                spec = _DEFS[name]
                metric: Any = self._metrics.get(name)
                if metric is None:
                    kind = metrics.Counter if spec.kind == "counter" else metrics.Gauge
                    metric = kind(name, description=spec.help, tag_keys=spec.labels)
                    self._metrics[name] = metric
                tags = dict(labels) if labels else None
                if spec.kind == "gauge":
                    metric.set(value, tags=tags)
                    continue
                last = self._last.get((name, labels), 0.0)
                self._last[(name, labels)] = value
                grown = value - last if value >= last else value
                if grown > 0:
                    metric.inc(grown, tags=tags)
        return True


reporter = RayReporter()
