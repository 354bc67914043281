"""An async Ray actor that starts a copy with ``await lm.start_hdfs_copy(...)`` and
keeps serving calls meanwhile: the start waits on the copier actor without
blocking the actor's event loop. A ticker inside the actor measures the loop's
worst stall during the start (``worst_loop_stall_ms``), and then, as an anchor, for
as long again with nothing starting (``idle_loop_stall_ms``); the driver pings the
actor all along.

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

    async def idle_stall(self, seconds: float) -> float:
        """The anchor: the same ticker for as long, serving pings, starting nothing."""
        done = asyncio.Event()
        ticker = asyncio.get_running_loop().create_task(self._ticker(done))
        await asyncio.sleep(seconds)
        done.set()
        await ticker
        worst = max(self.lags, default=0.0)
        self.lags.clear()
        return round(worst * 1000, 2)

    async def start_shipping(self, destination: str) -> dict[str, Any]:
        done = asyncio.Event()
        ticker = asyncio.get_running_loop().create_task(self._ticker(done))
        pings_before = self.pings
        started = time.perf_counter()
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
        worst = max(self.lags, default=0.0)
        self.lags.clear()
        return {
            "state": op.state,
            "pings_served_meanwhile": self.pings - pings_before,
            "start_seconds": round(time.perf_counter() - started, 3),
            "worst_loop_stall_ms": round(worst * 1000, 2),
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
    parser.add_argument("--work", help="folder for the logs (default: a new temp folder)")
    args = parser.parse_args()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="aiologship-actor-"))
    (work / "logs").mkdir(parents=True)
    destination = args.destination or str(work / "shipped")
    ray.init(address=args.address, num_cpus=None if args.address else 1)
    try:
        service = Service.remote(str(work / "logs"))
        ray.get(service.ping.remote(), timeout=60)
        start = service.start_shipping.remote(destination)
        while not ray.wait([start], timeout=0.005)[0]:
            ray.get(service.ping.remote(), timeout=30)  # served while the start is awaited
        result = ray.get(start, timeout=120)
        # The machine's own noise, for comparison: as long again, pings, no start.
        idle = service.idle_stall.remote(max(result["start_seconds"], 0.5))
        while not ray.wait([idle], timeout=0.005)[0]:
            ray.get(service.ping.remote(), timeout=30)
        result["idle_loop_stall_ms"] = ray.get(idle, timeout=60)
        print(result)
        ray.get(service.close.remote(), timeout=60)
        print(aray.describe_cluster())
        final = aray.stop_copy("service_logs")
        print(f"stopped after a final cycle: {final[0].files_shipped} files shipped")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
