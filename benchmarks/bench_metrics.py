"""What a scrape of aiologship's metrics costs, with 100 copy operations running.

    python benchmarks/bench_metrics.py [--copies 100] [--scrapes 200]

Three figures, medians over ``--scrapes`` scrapes (target: an HTTP scrape of
100 copies under 10 ms):

- collect: ``Collector().collect()``, the figures read from every manager and
  engine and turned into metric families;
- text: prometheus_client's ``generate_latest`` of a registry holding only our
  collector (collect plus the text format);
- http: a GET of ``aiologship.metrics.serve()``'s ``/metrics`` over loopback.

Anchor, measured in the same run: ``generate_latest`` of a registry whose
prometheus_client ``Gauge``/``Counter`` objects hold the same samples already
(what the text alone costs, with nothing to read), and a GET of prometheus_client's
own ``start_http_server`` over that registry. The logging benchmark has the other
half of the issue's figure: its ``aiologship-metrics`` row is the throughput with
``serve()`` scraped every second.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from _common import median, print_table, uptime_line, verdict
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

import aiologship.metrics
from aiologship import LogManager


def timed(func: Callable[[], object], n: int) -> float:
    """Median seconds of ``n`` calls."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        func()
        times.append(time.perf_counter() - t)
    return median(times)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def anchor_registry(text: bytes) -> CollectorRegistry:
    """A registry with prometheus_client's own metric objects holding the samples
    our scrape returned (same names, labels and values)."""
    from prometheus_client.parser import text_string_to_metric_families

    registry = CollectorRegistry()
    for family in text_string_to_metric_families(text.decode()):
        labels = sorted({k for s in family.samples for k in s.labels})
        kind = Counter if family.type == "counter" else Gauge
        metric = kind(family.name, family.documentation, labels, registry=registry)
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            child = metric.labels(**s.labels) if labels else metric
            if kind is Counter:
                child.inc(s.value)  # type: ignore[union-attr]
            else:
                child.set(s.value)  # type: ignore[union-attr]
    return registry


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--copies", type=int, default=100)
    p.add_argument("--scrapes", type=int, default=200)
    p.add_argument("--quick", action="store_true", help="20 scrapes (smoke run)")
    # nox -s bench passes the same arguments to every script: ignore the others' own.
    a, ignored = p.parse_known_args(argv)
    if ignored:
        print(f"bench_metrics: ignoring {' '.join(ignored)}")
    n = 20 if a.quick else a.scrapes
    print(uptime_line())
    with tempfile.TemporaryDirectory(prefix="aiologship-bench-metrics-") as d:
        tmp = Path(d)
        with LogManager(state_dir=tmp / "state") as lm:
            log = lm.get_logger("bench.metrics")
            log.add(tmp / "app.log")
            for i in range(1000):
                log.info("record %d", i)
            started = time.perf_counter()
            ops = []
            for c in range(a.copies):
                src = tmp / "src" / str(c)
                src.mkdir(parents=True)
                (src / "a.log").write_text("line\n" * (c + 1))
                op = lm.start_hdfs_copy(
                    f"copy{c}", [str(src / "*.log")], str(tmp / "dest" / str(c)), copy_interval=3600
                )
                ops.append(op)
            for op in ops:
                op.flush()
            print(f"{a.copies} copies started and flushed in {time.perf_counter() - started:.1f} s")
            collector = aiologship.metrics.Collector()
            ours = CollectorRegistry(auto_describe=False)
            ours.register(collector)
            server = aiologship.metrics.serve(0)
            try:
                text = get(server.url)
                copies_seen = text.count(b'aiologship_copy_bytes_behind{copy="')
                assert copies_seen == a.copies, copies_seen
                anchor = anchor_registry(text)
                anchor_server, anchor_thread = start_http_server(0, "127.0.0.1", registry=anchor)
                anchor_url = f"http://127.0.0.1:{anchor_server.server_address[1]}/metrics"
                try:
                    figures = {
                        "collect": timed(lambda: list(collector.collect()), n),
                        "text": timed(lambda: generate_latest(ours), n),
                        "http": timed(lambda: get(server.url), n),
                        "anchor text": timed(lambda: generate_latest(anchor), n),
                        "anchor http": timed(lambda: get(anchor_url), n),
                    }
                finally:
                    anchor_server.shutdown()
                    anchor_server.server_close()
                    anchor_thread.join(10)
            finally:
                server.close()
    rows = [
        ["collect", figures["collect"] * 1e3, "-"],
        [
            "text (collect + format)",
            figures["text"] * 1e3,
            figures["text"] / figures["anchor text"],
        ],
        ["http GET /metrics", figures["http"] * 1e3, figures["http"] / figures["anchor http"]],
        ["anchor: prometheus_client text", figures["anchor text"] * 1e3, 1.0],
        ["anchor: prometheus_client http", figures["anchor http"] * 1e3, 1.0],
    ]
    print_table(
        f"Scrape of {a.copies} copies and the pipeline ({len(text):,} bytes; median of {n})",
        ["what", "ms", "x anchor"],
        rows,
    )
    verdict(
        "scrape of 100 copies under 10 ms",
        figures["http"] < 0.010 if a.copies >= 100 else None,
        f"http {figures['http'] * 1e3:.2f} ms",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
