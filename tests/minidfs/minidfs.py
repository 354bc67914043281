"""Build and run the HDFS mini-cluster of tests/minidfs (used by tests/hdfs and benchmarks).

    cluster = MiniDfs.start(data_dir)      # builds once, waits for the ready line (bounded)
    cluster.uri, cluster.rpc_port, cluster.http_port, cluster.conf_dir
    cluster.command("restart-namenode")   # one JSON answer per command (bounded)
    cluster.close()                        # closes stdin, then kills after a timeout

The Maven build writes target/classes and target/classpath.txt once; later starts run
``java -cp`` directly (no Maven, about 7 s to a ready cluster on 2 cores). Maven uses the
normal local repository (~/.m2), so a second build downloads nothing.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parent
CLASSES = PROJECT / "target" / "classes"
CLASSPATH_FILE = PROJECT / "target" / "classpath.txt"
MAIN_CLASS = "aiologship.minidfs.MiniDfs"
BUILD_TIMEOUT = 900.0  # a cold ~/.m2 downloads about 130 MB
START_TIMEOUT = 120.0
COMMAND_TIMEOUT = 120.0
STOP_TIMEOUT = 30.0
JVM_FLAGS = (
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.net.preferIPv4Stack=true",
)


class MiniDfsError(RuntimeError):
    """The mini-cluster could not be built, started or commanded."""


def missing_tools() -> list[str]:
    """Names of the tools the mini-cluster needs that are not on PATH."""
    return [tool for tool in ("java", "mvn") if shutil.which(tool) is None]


def _sources_newer_than(target: Path) -> bool:
    if not target.exists():
        return True
    built = target.stat().st_mtime
    sources = [PROJECT / "pom.xml", *(PROJECT / "src").rglob("*")]
    return any(p.is_file() and p.stat().st_mtime > built for p in sources)


def build(timeout: float = BUILD_TIMEOUT) -> str:
    """Compile the harness and write its classpath once; return the java -cp value."""
    if _sources_newer_than(CLASSPATH_FILE) or not (CLASSES / "aiologship").exists():
        cmd = [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(PROJECT / "pom.xml"),
            "compile",
            "dependency:build-classpath",
            f"-Dmdep.outputFile={CLASSPATH_FILE}",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise MiniDfsError(f"maven build timed out after {timeout:.0f}s: {cmd}") from exc
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-4000:]
            raise MiniDfsError(f"maven build failed ({proc.returncode}):\n{tail}")
        os.utime(CLASSPATH_FILE)
    return f"{CLASSES}{os.pathsep}{CLASSPATH_FILE.read_text().strip()}"


class MiniDfs:
    """A running mini-cluster process speaking the JSON-line protocol of MiniDfs.java."""

    def __init__(self, proc: subprocess.Popen[str], info: dict[str, Any]) -> None:
        self.proc = proc
        self.info = info
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._lines: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._lock = threading.Lock()
        self._pumps: list[threading.Thread] = []

    # -- lifecycle ---------------------------------------------------------------------------
    @classmethod
    def start(
        cls,
        data_dir: Path,
        *,
        datanodes: int = 2,
        block_size: int = 1024 * 1024,
        timeout: float = START_TIMEOUT,
        jvm_flags: tuple[str, ...] = JVM_FLAGS,
        conf: dict[str, str] | None = None,
    ) -> MiniDfs:
        classpath = build()
        data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            "java",
            *jvm_flags,
            "-cp",
            classpath,
            MAIN_CLASS,
            str(data_dir),
            "--datanodes",
            str(datanodes),
            "--block-size",
            str(block_size),
            *(arg for key, value in (conf or {}).items() for arg in ("--conf", f"{key}={value}")),
        ]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self = cls(proc, {})
        for pump in (self._pump_stderr, self._pump_stdout):
            thread = threading.Thread(target=pump, daemon=True)
            thread.start()
            self._pumps.append(thread)
        try:
            first = self._next_line(timeout)
        except MiniDfsError:
            self.close()
            raise
        if first.get("event") != "ready":
            self.close()
            raise MiniDfsError(f"mini-cluster failed to start: {first}\n{self.stderr_tail()}")
        self.info = first
        return self

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Close stdin (the harness shuts down), then kill if it is still alive."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for thread in self._pumps:
            thread.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def __enter__(self) -> MiniDfs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- protocol ----------------------------------------------------------------------------
    def command(self, line: str, timeout: float = COMMAND_TIMEOUT) -> dict[str, Any]:
        """Send one command; return its JSON answer or raise MiniDfsError with the JVM's tail."""
        with self._lock:
            if self.proc.poll() is not None:
                raise MiniDfsError(
                    f"mini-cluster exited ({self.proc.returncode})\n{self.stderr_tail()}"
                )
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            answer = self._next_line(timeout)
        if not answer.get("ok"):
            raise MiniDfsError(f"{line!r} failed: {answer.get('error')}\n{self.stderr_tail()}")
        if "rpc_port" in answer:
            self.info = answer
        return answer

    def stderr_tail(self, lines: int = 60) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    def _next_line(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._lines:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MiniDfsError(
                        f"no answer from the mini-cluster within {timeout:.0f}s; JVM output:\n"
                        f"{self.stderr_tail()}"
                    )
                if self.proc.poll() is not None and not self._lines:
                    # Give the pumps a moment to drain what the JVM printed last.
                    self._cond.wait(0.5)
                    if not self._lines:
                        raise MiniDfsError(
                            f"mini-cluster exited ({self.proc.returncode}); JVM output:\n"
                            f"{self.stderr_tail()}"
                        )
                self._cond.wait(min(left, 0.5))
            raw = self._lines.popleft()
        try:
            return dict(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise MiniDfsError(f"bad line from the mini-cluster: {raw!r}") from exc

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                with self._cond:
                    self._lines.append(line.strip())
                    self._cond.notify_all()
            else:
                self._stderr.append(line.rstrip())
        with self._cond:
            self._cond.notify_all()

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip())

    # -- accessors ---------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return str(self.info["host"])

    @property
    def rpc_port(self) -> int:
        return int(self.info["rpc_port"])

    @property
    def http_port(self) -> int:
        return int(self.info["http_port"])

    @property
    def uri(self) -> str:
        return str(self.info["uri"])

    @property
    def conf_dir(self) -> Path:
        return Path(self.info["conf_dir"])

    @property
    def superuser(self) -> str:
        return str(self.info["superuser"])
