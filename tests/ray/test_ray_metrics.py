"""The figures in Ray's own Prometheus endpoint: the copier actor's and the
managers', read over HTTP from the head node's metrics export port and parsed
with prometheus_client's parser (no extra server, nothing registered)."""

from __future__ import annotations

import logging
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from aiologship import LogManager
from tests.conftest import only_aiologship_sinks

Samples = list[tuple[str, dict[str, str], float]]


def ray_samples(port: int) -> Samples:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("ray_aiologship_")
    ]


def head_metrics_port(cluster: Any) -> int:
    (head,) = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] == cluster.node_ids["head"]]
    return int(head["MetricsExportPort"])


def find(samples: Samples, name: str, **labels: str) -> list[float]:
    wanted = labels.items()
    return [v for n, have, v in samples if n == name and all(have.get(k) == x for k, x in wanted)]


@pytest.mark.timeout(180)
def test_copier_and_manager_figures_reach_ray_s_prometheus_endpoint(
    cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The driver's manager pushes every 0.5 s (the copier pushes after each flush).
    monkeypatch.setenv("AIOLOGSHIP_RAY_METRICS_INTERVAL", "0.5")
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    for i in range(3):
        (src / f"m{i}.log").write_bytes(b"metric line\n" * (100 + i))
    port = head_metrics_port(cluster)
    with LogManager() as lm:  # the driver: on the head node, Ray initialized
        log = lm.get_logger("ray.metrics.driver")
        only_aiologship_sinks(logging.getLogger("ray.metrics.driver"))
        log.add(tmp_path / "driver.log")
        for i in range(250):
            log.info("record %d", i)
        op = lm.start_hdfs_copy("metrics_copy", [str(src / "*.log")], str(dest), copy_interval=3600)
        op.flush()  # in the copier actor on the head node
        expected_bytes = sum(len(b"metric line\n") * (100 + i) for i in range(3))
        deadline = time.monotonic() + 60
        while True:
            samples = ray_samples(port)
            shipped = find(samples, "ray_aiologship_copy_files_shipped_total", copy="metrics_copy")
            sent = find(samples, "ray_aiologship_copy_bytes_shipped_total", copy="metrics_copy")
            behind = find(samples, "ray_aiologship_copy_bytes_behind", copy="metrics_copy")
            accepted = find(samples, "ray_aiologship_records_accepted_total")
            done = shipped == [3] and sent == [expected_bytes] and behind == [0]
            if done and accepted and max(accepted) >= 250:
                break
            assert time.monotonic() < deadline, (shipped, sent, behind, accepted)
            time.sleep(0.5)
        lm.stop_hdfs_copy("metrics_copy")
    # Ray adds its own labels: the metric names as the README documents them.
    names = {n for n, _, _ in samples}
    assert "ray_aiologship_copy_oldest_unshipped_age_seconds" in names
    assert "ray_aiologship_queue_capacity" in names
