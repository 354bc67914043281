"""The metrics aiologship exports: one table, read by the Prometheus collector
(``aiologship.metrics``) and the Ray reporter alike, and the samples of each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from ._figures import PipelineFigures

if TYPE_CHECKING:
    from .._copy import CopyStatus

Labels = tuple[tuple[str, str], ...]
# (metric name as in METRICS, labels, value)
Sample = tuple[str, Labels, float]


@dataclass(frozen=True, slots=True)
class MetricDef:
    """``name`` without the ``_total`` a counter gets in the exposition."""

    name: str
    kind: Literal["counter", "gauge"]
    help: str
    labels: tuple[str, ...] = ()


METRICS: tuple[MetricDef, ...] = (
    # the pipeline (every open LogManager of the process, and the closed ones' counts)
    MetricDef("aiologship_records_accepted", "counter", "Records that entered the queue."),
    MetricDef("aiologship_records_written", "counter", "Records written to their sink."),
    MetricDef(
        "aiologship_records_dropped",
        "counter",
        "Records dropped: queue_full (refused by a full queue), evicted (drop_oldest), "
        "stream_full (a stream sink's buffer).",
        ("reason",),
    ),
    MetricDef("aiologship_write_errors", "counter", "Records whose format or write failed."),
    MetricDef("aiologship_queue_depth", "gauge", "Records waiting in the queue now."),
    MetricDef("aiologship_queue_capacity", "gauge", "Queue capacity (queue_size)."),
    MetricDef(
        "aiologship_records_after_close",
        "counter",
        "Records logged after their LogManager closed (written on the slow path).",
    ),
    # each copy operation this process runs
    MetricDef(
        "aiologship_copy_bytes_shipped", "counter", "Bytes sent to the destination.", ("copy",)
    ),
    MetricDef(
        "aiologship_copy_files_shipped",
        "counter",
        "Transfers done (appends and replacements).",
        ("copy",),
    ),
    MetricDef(
        "aiologship_copy_files_pending",
        "gauge",
        "Files with bytes not at the destination after the last cycle.",
        ("copy",),
    ),
    MetricDef(
        "aiologship_copy_bytes_behind",
        "gauge",
        "Source bytes not at the destination after the last cycle.",
        ("copy",),
    ),
    MetricDef(
        "aiologship_copy_oldest_unshipped_age_seconds",
        "gauge",
        "Age of the oldest byte not at the destination (0: nothing behind).",
        ("copy",),
    ),
    MetricDef(
        "aiologship_copy_cycle_duration_seconds",
        "gauge",
        "Duration of the last cycle.",
        ("copy",),
    ),
    MetricDef("aiologship_copy_cycles", "counter", "Cycles finished.", ("copy",)),
    MetricDef(
        "aiologship_copy_consecutive_failures",
        "gauge",
        "Cycles in a row whose destination failed (0: the last one worked).",
        ("copy",),
    ),
    MetricDef(
        "aiologship_copy_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the end of the last cycle the destination took (0: none yet).",
        ("copy",),
    ),
    MetricDef("aiologship_copy_retries", "counter", "Transfer attempts retried.", ("copy",)),
)


def pipeline_samples(figures: PipelineFigures, after_close: int) -> list[Sample]:
    return [
        ("aiologship_records_accepted", (), figures.accepted),
        ("aiologship_records_written", (), figures.written),
        ("aiologship_records_dropped", (("reason", "queue_full"),), figures.dropped_queue_full),
        ("aiologship_records_dropped", (("reason", "evicted"),), figures.dropped_evicted),
        ("aiologship_records_dropped", (("reason", "stream_full"),), figures.dropped_stream),
        ("aiologship_write_errors", (), figures.write_errors),
        ("aiologship_queue_depth", (), figures.queued),
        ("aiologship_queue_capacity", (), figures.capacity),
        ("aiologship_records_after_close", (), after_close),
    ]


def copy_samples(statuses: list[CopyStatus]) -> list[Sample]:
    out: list[Sample] = []
    for s in statuses:
        label = (("copy", s.name),)
        success = s.last_success_at.timestamp() if s.last_success_at is not None else 0.0
        out += [
            ("aiologship_copy_bytes_shipped", label, s.bytes_shipped),
            ("aiologship_copy_files_shipped", label, s.files_shipped),
            ("aiologship_copy_files_pending", label, s.pending_files),
            ("aiologship_copy_bytes_behind", label, s.bytes_behind),
            ("aiologship_copy_oldest_unshipped_age_seconds", label, s.oldest_unshipped_age),
            ("aiologship_copy_cycle_duration_seconds", label, s.last_cycle_seconds or 0.0),
            ("aiologship_copy_cycles", label, s.cycles),
            ("aiologship_copy_consecutive_failures", label, s.consecutive_failures),
            ("aiologship_copy_last_success_timestamp_seconds", label, success),
            ("aiologship_copy_retries", label, s.retries),
        ]
    return out
