"""Temporary files of this run that a failed transfer may leave at the destination.

A transfer that fails after its temporary file was (possibly) created removes it
at once, but on HDFS that is not the end of it: a WebHDFS write goes through a
DataNode whose own HDFS client keeps retrying the create and the writes after our
request failed, and a create RPC cut by a NameNode restart may have been applied
without an answer. The file can then appear after we looked for it, and no later
step would remove it (stale temporary files are only removed at a run's first
cycle, and only other runs'). So each such name is watched: every cycle looks for
it once and deletes it if it is there, until it has stayed absent long enough.
"""

from __future__ import annotations

import threading

import pyarrow
import pyarrow.fs as pafs

# Seconds a watched name must stay absent before it is forgotten. An HDFS client
# (the DataNode's own DFSClient behind a WebHDFS write) goes on with a cut create
# or write for up to about a minute with the default settings: a stalled socket
# is given up after dfs.client.socket-timeout (60 s), a refused NameNode RPC is
# retried ipc.client.connect.max.retries (10) times 1 s apart. Twice that.
GRACE = 120.0


class TempWatch:
    """Watched temporary names: ``add`` (from worker threads) after a failed
    transfer, ``sweep`` (blocking, once a cycle) to delete those that exist.

    A name is forgotten once a sweep finds it absent ``grace`` seconds after an
    earlier sweep first found it absent (reappearing restarts the wait). A name
    whose delete fails stays watched, so the delete is retried next sweep."""

    def __init__(self, grace: float = GRACE) -> None:
        self.grace = grace
        # name -> when a sweep first saw it absent (None: not seen absent yet).
        self._names: dict[str, float | None] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def add(self, name: str) -> None:
        """Watch ``name`` (again): it may exist now or appear later."""
        with self._lock:
            self._names[name] = None

    def sweep(self, fs: pafs.FileSystem, now: float) -> None:
        """Delete each watched name that exists; forget those absent for the
        grace period. Stops at the first name the destination cannot be asked
        about (down: the rest waits for the next sweep); that name goes last,
        so one name the destination always fails on does not block the others."""
        with self._lock:
            names = list(self._names.items())
        for name, absent_since in names:
            try:
                kind = fs.get_file_info(name).type
            except (OSError, pyarrow.ArrowException):
                self._seen(name, absent_since, last=True)
                return
            if kind != pafs.FileType.File:  # a folder of that name is not ours
                if absent_since is None:
                    self._seen(name, now)
                elif now - absent_since >= self.grace:
                    self._forget(name)
                continue
            try:
                fs.delete_file(name)
            except (OSError, pyarrow.ArrowException):
                self._seen(name, None, last=True)  # retried next sweep
            else:
                self._seen(name, None)  # deleted; it may still come back

    def _seen(self, name: str, absent_since: float | None, *, last: bool = False) -> None:
        with self._lock:
            if name in self._names:
                if last:
                    del self._names[name]
                self._names[name] = absent_since

    def _forget(self, name: str) -> None:
        with self._lock:
            self._names.pop(name, None)
