"""An async Ray actor that starts a copy with ``await lm.start_hdfs_copy(...)`` and
keeps serving calls meanwhile: the start waits on the copier actor without
blocking the actor's event loop. A ticker inside the actor measures the loop's
worst stall during the start; the driver pings the actor while it starts.

    python examples/ray_async_actor.py                 # a local single-node cluster
    python examples/ray_async_actor.py --address auto  # an existing cluster
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from aiologship import LogManager
from aiologship import ray as aray


@ray.remote(num_cpus=0)
class Service:
    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.lm = LogManager()
        self.log = self.lm.get_logger("service")
        self.log.add(f"{log_dir}/service.log")
        self.pings = 0
        self.lags: list[float] = []

    async def _ticker(self, done: asyncio.Event) -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            self.lags.append(time.perf_counter() - t0 - 0.001)

    async def start_shipping(self, destination: str) -> dict[str, Any]:
        done = asyncio.Event()
        ticker = asyncio.get_running_loop().create_task(self._ticker(done))
        pings_before = self.pings
        try:
            op = await self.lm.start_hdfs_copy(
                copy_name="service_logs",
                path_patterns=[f"{self.log_dir}/*.log"],
                hdfs_destination=destination,
                copy_interval=5,
            )
        finally:
            done.set()
            await ticker
        self.log.info("shipping started: %s", op.state)
        return {
            "state": op.state,
            "pings_served_meanwhile": self.pings - pings_before,
            "worst_loop_stall_ms": round(max(self.lags, default=0.0) * 1000, 2),
        }

    async def ping(self) -> int:
        self.pings += 1
        return self.pings

    async def close(self) -> None:
        await self.lm.aclose()  # the copier actor keeps running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="an existing cluster (default: start a local one)")
    parser.add_argument("--destination", help="where to ship (default: a temp folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aiologship-actor-"))
    (work / "logs").mkdir()
    destination = args.destination or str(work / "shipped")
    ray.init(address=args.address, num_cpus=None if args.address else 1)
    try:
        service = Service.remote(str(work / "logs"))
        ray.get(service.ping.remote(), timeout=60)
        start = service.start_shipping.remote(destination)
        while not ray.wait([start], timeout=0.005)[0]:
            ray.get(service.ping.remote(), timeout=30)  # served while the start is awaited
        print(ray.get(start, timeout=120))
        ray.get(service.close.remote(), timeout=60)
        print(aray.describe_cluster())
        final = aray.stop_copy("service_logs")
        print(f"stopped after a final cycle: {final[0].files_shipped} files shipped")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
