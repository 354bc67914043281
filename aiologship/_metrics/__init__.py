"""Metrics: the figures the pipeline and the copy engines already keep, read when
someone asks (a Prometheus scrape, a push to Ray's metrics agent), never on the
caller's path.

Layer rule: below the manager and ``_copiers`` (both report through it), above
``_copy`` and ``_logging`` (whose counters it reads, as plain values: it imports
neither at run time). ``_ray`` imports Ray, lazily and only when Ray is already
initialized; nothing here imports prometheus_client (``aiologship.metrics`` does).
"""

from ._figures import PipelineFigures, process_figures, retire
from ._ray import RayReporter, push_interval, reporter
from ._table import METRICS, MetricDef, Sample, copy_samples, pipeline_samples

__all__ = [
    "METRICS",
    "MetricDef",
    "PipelineFigures",
    "RayReporter",
    "Sample",
    "copy_samples",
    "pipeline_samples",
    "process_figures",
    "push_interval",
    "reporter",
    "retire",
]
