"""A copier process killed with SIGKILL mid-upload, then restarted: the
destination ends byte-identical to the sources, with no temporary files."""

from __future__ import annotations

import errno
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiologship._copy import _engine_state
from aiologship._copy._transfer import TMP_MARK
from aiologship._exceptions import CopyError
from tests.copy.test_engine import Env

REPO = Path(__file__).resolve().parents[2]

# The child copies with a real local destination; in "slow" mode the
# destination's output streams write 64 KiB pieces with a pause between them,
# so the parent can kill it while an upload is in flight.
CHILD = r"""
import json, sys, time
from pathlib import Path

import anyio
import pyarrow as pa
import pyarrow.fs as pafs

from aiologship._copy import CopyEngine, CopySpec
from aiologship._fs import Destination

src, dst, state, mode = sys.argv[1:5]
compression = sys.argv[5] if len(sys.argv) > 5 else None


class SlowWriter:
    def __init__(self, inner):
        self.inner = inner
        self.closed = False

    def write(self, data):
        view = memoryview(data).cast("B")
        for i in range(0, len(view), 65536):
            self.inner.write(view[i:i + 65536])
            time.sleep(0.02)
        return len(view)

    def flush(self):
        pass

    def close(self):
        self.inner.close()
        self.closed = True


class SlowLocal(pafs.FileSystemHandler):
    def __init__(self):
        self.fs = pafs.LocalFileSystem()

    def get_type_name(self): return "slow-local"
    def equals(self, other): return other is self
    def get_file_info(self, paths): return self.fs.get_file_info(paths)
    def get_file_info_selector(self, sel): return self.fs.get_file_info(sel)
    def create_dir(self, path, recursive): self.fs.create_dir(path, recursive=recursive)
    def delete_dir(self, path): self.fs.delete_dir(path)
    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)
    def delete_root_dir_contents(self): raise NotImplementedError
    def delete_file(self, path): self.fs.delete_file(path)
    def move(self, a, b): self.fs.move(a, b)
    def copy_file(self, a, b): self.fs.copy_file(a, b)
    def open_input_stream(self, path): return self.fs.open_input_stream(path, compression=None)
    def open_input_file(self, path): return self.fs.open_input_file(path)
    def open_output_stream(self, path, metadata):
        out = self.fs.open_output_stream(path, compression=None)
        return pa.PythonFile(SlowWriter(out), mode="w")
    def open_append_stream(self, path, metadata):
        out = self.fs.open_append_stream(path, compression=None)
        return pa.PythonFile(SlowWriter(out), mode="w")
    def normalize_path(self, path): return path


def resolver(uri):
    if mode == "slow":
        return Destination(pafs.PyFileSystem(SlowLocal()), dst, dst, True)
    return Destination(pafs.LocalFileSystem(), dst, dst, True)


async def main():
    spec = CopySpec.from_params(copy_name="killed", path_patterns=[src + "/*.log"],
                                hdfs_destination=dst, copy_interval=None, retry_delay=0,
                                compression=compression)
    engine = CopyEngine(spec, state_dir=Path(state), resolver=resolver, workers=1)
    await engine.open()
    print("opened", flush=True)
    result = await engine.flush()
    await engine.stop(final_cycle=False)
    print(json.dumps({"ok": result.ok, "bytes": result.bytes_shipped,
                      "appended": result.files_appended, "replaced": result.files_replaced}))

anyio.run(main)
"""


def lines(start: int, count: int) -> bytes:
    return b"".join(f"{i:08d} {'y' * 90}\n".encode() for i in range(start, start + count))


def start(
    script: Path, tmp: Path, mode: str, compression: str | None = None
) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [str(tmp / "src"), str(tmp / "dst"), str(tmp / "state"), mode]
    return subprocess.Popen(
        [sys.executable, str(script), *args, *([compression] if compression else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, int]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return result


def kill_when(proc: subprocess.Popen[str], condition: object, what: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate(timeout=30)
            pytest.fail(f"the copier exited before {what}: {out} {err}")
        if condition():  # type: ignore[operator]
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)  # reaps it and closes the pipes
            assert proc.returncode == -signal.SIGKILL
            return
        time.sleep(0.005)
    proc.kill()
    proc.communicate(timeout=30)
    pytest.fail(f"timed out waiting for {what}")


def temp_files(dst: Path) -> list[Path]:
    return [p for p in dst.rglob("*") if TMP_MARK in p.name] if dst.exists() else []


def assert_no_partial_final_files(src: Path, dst: Path) -> None:
    """Every non-temporary file at the destination is a prefix of its source
    (complete for replaced files: a replacement becomes visible only whole)."""
    for path in dst.rglob("*"):
        if path.is_file() and TMP_MARK not in path.name:
            data = (src / path.name).read_bytes()
            assert data.startswith(path.read_bytes())


@pytest.mark.timeout(240)
def test_sigkill_mid_upload_then_restart(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    src.mkdir()
    (src / "small.log").write_bytes(lines(0, 10))
    (src / "app.log").write_bytes(lines(0, 30_000))  # ~3 MB: ~1 s at the slow pace
    os.utime(src / "small.log", ns=(1, 1))  # oldest first: small.log completes before

    # 1. Killed while replacing: the temporary file is there, app.log is not.
    proc = start(script, tmp_path, "slow")
    kill_when(
        proc,
        lambda: any(p.stat().st_size > 0 for p in temp_files(dst) if p.exists()),
        "a temporary file with data",
    )
    assert temp_files(dst), "the kill should leave the temporary file behind"
    assert not (dst / "app.log").exists()
    assert_no_partial_final_files(src, dst)

    result = finish(start(script, tmp_path, "fast"))
    assert result["ok"]
    assert temp_files(dst) == []
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == {
        "small.log": (src / "small.log").read_bytes(),
        "app.log": (src / "app.log").read_bytes(),
    }

    # 2. Killed while appending new bytes to a file already shipped.
    shipped = (dst / "app.log").stat().st_size
    with open(src / "app.log", "ab") as f:
        f.write(lines(30_000, 30_000))
    proc = start(script, tmp_path, "slow")
    kill_when(proc, lambda: (dst / "app.log").stat().st_size > shipped, "a partial append")
    assert_no_partial_final_files(src, dst)
    partial = (dst / "app.log").stat().st_size

    result = finish(start(script, tmp_path, "fast"))
    assert result["ok"]
    # The restart keeps the bytes the killed copier appended and sends the rest.
    assert result["appended"] == 1 and result["replaced"] == 0
    assert result["bytes"] == (src / "app.log").stat().st_size - partial
    assert temp_files(dst) == []
    assert (dst / "app.log").read_bytes() == (src / "app.log").read_bytes()
    assert (dst / "small.log").read_bytes() == (src / "small.log").read_bytes()


def noisy_lines(start: int, count: int) -> bytes:
    """Lines that compress about 2:1 (hex of random bytes): a compressed upload
    of a few MB still takes many 64 KiB writes at the slow pace."""
    return b"".join(
        f"{i:08d} {os.urandom(45).hex()}\n".encode() for i in range(start, count + start)
    )


@pytest.mark.timeout(240)
def test_sigkill_mid_compressed_upload_then_restart(tmp_path: Path) -> None:
    """gzip on: killed mid-replace, then mid-append (a member cut short at
    the end of the destination file). The restart replaces the file: the
    decompressed destination equals the source, no temporary file is left."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    src.mkdir()
    (src / "small.log").write_bytes(noisy_lines(0, 10))
    (src / "app.log").write_bytes(noisy_lines(0, 30_000))  # ~3 MB, ~1.5 MB compressed
    os.utime(src / "small.log", ns=(1, 1))

    def decompressed() -> dict[str, bytes]:
        return {p.name: gzip.decompress(p.read_bytes()) for p in dst.iterdir()}

    proc = start(script, tmp_path, "slow", "gzip")
    kill_when(
        proc,
        lambda: any(p.stat().st_size > 0 for p in temp_files(dst) if p.exists()),
        "a temporary file with data",
    )
    assert temp_files(dst) and not (dst / "app.log.gz").exists()
    assert finish(start(script, tmp_path, "fast", "gzip"))["ok"]
    assert temp_files(dst) == []
    want = {p.name + ".gz": p.read_bytes() for p in src.iterdir()}
    assert decompressed() == want

    shipped = (dst / "app.log.gz").stat().st_size
    with open(src / "app.log", "ab") as f:
        f.write(noisy_lines(30_000, 30_000))
    proc = start(script, tmp_path, "slow", "gzip")
    kill_when(proc, lambda: (dst / "app.log.gz").stat().st_size > shipped, "a partial append")

    result = finish(start(script, tmp_path, "fast", "gzip"))
    assert result["ok"] and (result["appended"], result["replaced"]) == (0, 1)
    assert temp_files(dst) == []
    assert decompressed() == {p.name + ".gz": p.read_bytes() for p in src.iterdir()}


# ---------------------------------------------------------------- killed before the save
#
# The manifest is saved at the end of a cycle and every _SAVE_EVERY_SECONDS
# within one, so a copier killed between a file's final rename and the next
# save leaves that file at the destination but not in its manifest. The run
# after it must take the file as shipped (or partly shipped), not send it again.


def _kill_before_save(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every manifest save fails from now on, as if the process died before it."""

    def dead(path: Path, payload: bytes) -> None:
        raise OSError(errno.EIO, "the copier was killed before this save")

    monkeypatch.setattr(_engine_state, "write_atomic", dead)


@pytest.mark.anyio
async def test_files_renamed_in_place_before_a_kill_are_adopted_not_sent_again(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.write("saved.log", lines(0, 10))
    env.write("rotated.log", lines(300, 10))
    first = await env.engine()
    assert (await first.flush()).files_shipped == 2  # in the manifest on disk
    env.write("whole.log", lines(100, 50))  # arrives whole, then the kill
    env.write("grows.log", lines(200, 50))  # arrives, grows while the copier is down
    env.write(".next", lines(400, 30))
    os.replace(env.src / ".next", env.src / "rotated.log")  # a new file under the name
    with monkeypatch.context() as m:
        _kill_before_save(m)
        with pytest.raises(CopyError, match="cannot save its manifest"):
            await first.flush()
    await first.stop(final_cycle=False)
    assert env.dest_files() == {p.name: p.read_bytes() for p in env.src.iterdir()}
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in env.dst.iterdir()}
    env.write("grows.log", lines(250, 7), mode="ab")

    again = await env.engine()
    result = await again.flush()
    assert result.ok
    # Only grows.log's new bytes travel, appended to the file already there.
    assert (result.files_shipped, result.files_appended, result.files_replaced) == (1, 1, 0)
    assert result.bytes_shipped == len(lines(250, 7))
    for name, ident in before.items():
        st = (env.dst / name).stat()
        assert st.st_ino == ident[0], f"{name} was written again"
        if name != "grows.log":
            assert st.st_mtime_ns == ident[1], f"{name} was written again"
    assert env.dest_files() == {p.name: p.read_bytes() for p in env.src.iterdir()}
    # All four are in the manifest on disk again.
    saved = json.loads((again.state_path / "manifest.json").read_bytes())["files"]
    assert sorted(os.path.basename(source) for source in saved) == sorted(before)


@pytest.mark.anyio
async def test_a_destination_file_that_differs_is_not_adopted(env: Env) -> None:
    env.write("saved.log", lines(0, 10))
    first = await env.engine()
    await first.flush()
    await first.stop()
    env.write("a.log", b"the real content\n")
    (env.dst / "a.log").write_bytes(b"something else!\n")  # not ours, not a prefix
    again = await env.engine()
    result = await again.flush()
    assert (result.files_shipped, result.files_replaced, result.bytes_shipped) == (1, 1, 17)
    assert env.dest_files()["a.log"] == b"the real content\n"
