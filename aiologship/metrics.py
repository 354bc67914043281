"""aiologship's metrics for Prometheus (extra ``aiologship[metrics]``).

::

    import aiologship.metrics
    from prometheus_client import REGISTRY

    aiologship.metrics.register(REGISTRY)        # next to your own metrics
    server = aiologship.metrics.serve(9464)      # or a server of its own (scripts)

The figures are those the pipeline and the copy engines keep anyway, read when
Prometheus scrapes: a log call costs nothing more. They cover every
``LogManager`` of the process (a closed manager's counts stay in the totals) and
every copy whose engine runs in this process. In a Ray cluster the managers and
the copier actors push the same figures to Ray's metrics agent instead (names
prefixed ``ray_``, see the README); nothing to register there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector as _CollectorBase
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "aiologship.metrics needs prometheus-client: pip install 'aiologship[metrics]'"
    ) from exc

from ._manager import process_samples
from ._metrics import METRICS, MetricDef

__all__ = ["METRICS", "Collector", "MetricDef", "MetricsServer", "register", "serve"]


def _family(spec: MetricDef) -> CounterMetricFamily | GaugeMetricFamily:
    if spec.kind == "counter":
        return CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    return GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)


class Collector(_CollectorBase):
    """A ``prometheus_client`` collector of this process's aiologship metrics."""

    def collect(self) -> Iterator[Metric]:
        families = {spec.name: _family(spec) for spec in METRICS}
        for name, labels, value in process_samples():
            families[name].add_metric([v for _, v in labels], value)
        yield from families.values()

    def describe(self) -> Iterator[Metric]:
        # The names only: registering checks them against the registry's others
        # without reading a single figure.
        for spec in METRICS:
            yield _family(spec)


_registered: dict[int, Collector] = {}
_lock = threading.Lock()


def register(registry: CollectorRegistry | None = None) -> Collector:
    """Register the collector with ``registry`` (default: prometheus_client's
    ``REGISTRY``) once; calling again returns the same collector."""
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    with _lock:
        collector = _registered.get(id(registry))
        if collector is None:
            collector = Collector()
            registry.register(collector)
            _registered[id(registry)] = collector
        return collector


@dataclass(frozen=True)
class MetricsServer:
    """A running ``/metrics`` server (a thread of prometheus_client's)."""

    host: str
    port: int
    registry: CollectorRegistry
    _server: object
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving (blocks until the server's thread ends)."""
        self._server.shutdown()  # type: ignore[attr-defined]
        self._server.server_close()  # type: ignore[attr-defined]
        self._thread.join(10)


def serve(port: int = 9464, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve this process's aiologship metrics on ``http://addr:port/metrics``
    from a thread (for scripts; a web app mounts prometheus_client's own app
    instead, see ``examples/fastapi_app.py``). ``port=0`` picks a free port.
    The default ``addr`` is loopback only: pass ``"0.0.0.0"`` for a Prometheus
    on another host."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    server, thread = start_http_server(port, addr, registry=registry)
    return MetricsServer(addr, server.server_address[1], registry, server, thread)
