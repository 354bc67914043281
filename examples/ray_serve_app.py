"""A Ray Serve application whose replicas log through a LogManager each, while the
log copy runs once for the whole application.

Every replica calls ``start_hdfs_copy("serve_logs", ...)``: the first creates the
detached copier actor on the head node, the others get the same one. When Serve
shuts a replica down gracefully it calls ``__del__``, which closes the manager:
its records reach the disk and the copier runs a cycle before it is released (it
keeps running for the other replicas). ``lm.stop_hdfs_copy("serve_logs")`` from
any process of the cluster runs the final cycle and stops it.

    python examples/ray_serve_app.py --requests 20     # local Ray, local folders
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from ray import serve

from aiologship import LogManager

COPY_NAME = "serve_logs"


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0})
class Greeter:
    def __init__(self, log_dir: str, destination: str) -> None:
        self.lm = LogManager(format="json")
        self.log = self.lm.get_logger("serve.greeter")
        # One file per replica: two processes never append to one file.
        self.log.add(Path(log_dir) / f"replica-{os.getpid()}.log")
        self.lm.start_hdfs_copy(
            copy_name=COPY_NAME,
            path_patterns=[f"{log_dir}/*.log"],
            hdfs_destination=destination,
            copy_interval=3600,  # the shutdown's cycles ship everything in this demo
        )
        self.log.info("replica started")

    async def __call__(self, request: Any) -> dict[str, str]:
        request_id = request.headers.get("x-request-id", "?")
        self.log.info("request", extra={"request_id": request_id, "path": request.url.path})
        return {"hello": request_id}

    def __del__(self) -> None:
        # Serve calls this on graceful shutdown: drain, flush the copier, release it.
        self.lm.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run(requests: int, log_dir: Path, destination: Path) -> dict[str, Any]:
    import httpx

    port = _free_port()
    # address="local": a new cluster of our own, even if another one runs on this host.
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(Greeter.bind(str(log_dir), str(destination)), route_prefix="/")
        ids = [f"req-{i}" for i in range(requests)]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for request_id in ids:
                reply = client.get("/", headers={"x-request-id": request_id})
                reply.raise_for_status()
        serve.shutdown()  # graceful: every replica's __del__ closes its manager
        with LogManager() as lm:  # the driver is on the head node
            before = [s.name for s in lm.list_hdfs_copy_operations()]
            lm.stop_hdfs_copy(COPY_NAME)  # final cycle, then the copier ends
            after = [s.name for s in lm.list_hdfs_copy_operations()]
    finally:
        ray.shutdown()
    shipped = sorted(destination.rglob("replica-*.log"))
    records = [json.loads(line) for f in shipped for line in f.read_text().splitlines()]
    return {
        "requests": ids,
        "logged": sorted(r["request_id"] for r in records if r["message"] == "request"),
        "replicas": len(shipped),
        "copies_before_stop": before,
        "copies_after_stop": after,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="aiologship-serve-"))
    started = time.perf_counter()
    result = run(args.requests, out / "logs", out / "shipped")
    print(json.dumps(result))
    elapsed = time.perf_counter() - started
    print(
        f"{len(result['logged'])} of {len(result['requests'])} requests shipped "
        f"from {result['replicas']} replicas in {elapsed:.1f} s"
    )
