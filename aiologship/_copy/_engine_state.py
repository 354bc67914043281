"""The engine's hold on its state folder: the lock, the manifest and
``status.json`` (the names and the lock itself are ``_statedir``'s)."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path

import anyio
import anyio.to_thread

from .._exceptions import ConfigError, CopyError
from ._manifest import Entry, Manifest, ManifestCorrupt, ManifestOutdated, write_atomic
from ._spec import CopySpec
from ._statedir import (
    MANIFEST_NAME,
    STATUS_NAME,
    StateLock,
    adopt_legacy_folder,
    engine_lock_path,
    prepare_folder,
    write_status_file,
    writer_identity,
)
from ._status import CopyStatus

logger = logging.getLogger("aiologship.copy")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


class EngineState:
    """Lock, manifest and status file of one copy's state folder.

    ``unsaved`` stays set until a save succeeds, so a failed save is retried
    next cycle; ``needs_rebuild`` says the manifest on disk was lost or unusable.
    """

    def __init__(self, spec: CopySpec, state_dir: Path, limiter: anyio.CapacityLimiter) -> None:
        self._spec = spec
        self._limiter = limiter
        self.path = Path(state_dir) / spec.state_key
        self.manifest = Manifest(
            self.path / MANIFEST_NAME,
            copy_name=spec.copy_name,
            destination=spec.destination_redacted,
        )
        self.needs_rebuild = False
        self.unsaved = False
        self._lock = StateLock(engine_lock_path(state_dir, spec.state_key), spec.copy_name)
        self._save_lock = anyio.Lock()

    @property
    def lock_held(self) -> bool:
        return self._lock.held

    def open(self) -> None:
        """Blocking: take the lock, make the folder ready, load the manifest."""
        spec = self._spec
        # The lock first: only its holder may adopt, create or read the folder.
        try:
            self._lock.acquire()  # CopyError when another process holds it
            adopt_legacy_folder(self.path.parent, spec.copy_name, spec.destination_redacted)
            prepare_folder(self.path)
        except OSError as exc:
            raise ConfigError(
                "state_dir", str(self.path.parent), f"not writable: {exc.strerror or exc}"
            ) from exc
        try:
            loaded = Manifest.load(
                self.manifest.path,
                copy_name=spec.copy_name,
                destination=spec.destination_redacted,
            )
        except ManifestOutdated as exc:
            logger.info(
                "copy %r: manifest %s is in an older format (%s); rebuilding it from the "
                "destination",
                spec.copy_name,
                self.manifest.path,
                exc,
            )
            loaded = None
        except ManifestCorrupt as exc:
            logger.warning(
                "copy %r: manifest %s is corrupt (%s); rebuilding it from the destination",
                spec.copy_name,
                self.manifest.path,
                exc,
            )
            loaded = None
        if loaded is None:
            self.needs_rebuild = True
        else:
            self.manifest = loaded

    def verify_lock(self) -> None:
        """Blocking: CopyError when the lock is no longer ours (see ``StateLock.verify``)."""
        self._lock.verify()

    def ensure_folder(self) -> None:
        """Blocking: a removed folder alone (the lock lives outside it) is
        recreated, and the manifest in memory saved there again."""
        if not self.path.is_dir():
            self.path.mkdir(parents=True)  # a file in the way: the cycle fails, retried
            self.unsaved = True
            logger.warning(
                "copy %r: state folder %s was removed while this copier ran; recreated, "
                "its manifest is saved again from memory",
                self._spec.copy_name,
                self.path,
            )

    def release(self) -> None:
        self._lock.release()

    async def save(self) -> None:
        # Stays set until a save succeeds, so a failed save is retried next cycle.
        self.unsaved = True
        async with self._save_lock:
            current = self.manifest
            snapshot = dict(current.entries)
            manifest = Manifest(
                current.path, copy_name=current.copy_name, destination=current.destination
            )
            manifest.entries = snapshot
            manifest.absent = current.absent & snapshot.keys()
            manifest.rollup = current.rollup.copy()
            try:
                await anyio.to_thread.run_sync(
                    lambda: write_atomic(manifest.path, manifest.snapshot()), limiter=self._limiter
                )
            except OSError as exc:  # a full or read-only state dir
                raise CopyError(
                    f"copy operation {self._spec.copy_name!r} cannot save its manifest "
                    f"{manifest.path}: {exc.strerror or exc}"
                ) from exc
            self.unsaved = False

    async def take_found(self, found: dict[str, Entry], where: str) -> None:
        """Entries recognised at the destination (``_plan.prepare_destination``):
        the whole manifest when it ``needs_rebuild``, else files whose bytes
        there it does not record; saved at once."""
        if self.needs_rebuild:
            self.manifest.entries = found
            self.needs_rebuild = False
            what = "manifest rebuilt from %s (%d files already there)"
        elif found:
            self.manifest.entries.update(found)
            what = (
                "%s holds %d files whose bytes the manifest does not record (the last "
                "copier stopped before saving it): kept there, not sent again"
            )
        else:
            return
        await self.save()
        logger.info("copy %r: " + what, self._spec.copy_name, where, len(found))

    async def write_status(self, status: CopyStatus) -> None:
        """``status.json`` beside the manifest, for ``aiologship status`` (a shell has
        no other way to ask a copier in another process). Best effort."""
        data = self.status_payload(status)
        try:
            await anyio.to_thread.run_sync(
                write_status_file, self.path / STATUS_NAME, data, limiter=self._limiter
            )
        except OSError as exc:
            logger.debug("copy %r: could not write %s: %s", self._spec.copy_name, STATUS_NAME, exc)

    def write_status_now(self, status: CopyStatus) -> None:
        """Blocking but small (no fsync), for a stop that may be cancelled."""
        try:
            write_status_file(self.path / STATUS_NAME, self.status_payload(status))
        except OSError as exc:
            logger.debug("copy %r: could not write %s: %s", self._spec.copy_name, STATUS_NAME, exc)

    def _rollup_payload(self, status: CopyStatus) -> dict[str, int]:
        """Roll-up copies: roll files made by this run, and those the manifest
        follows (open ones take appends), with the bytes they hold."""
        state = self.manifest.rollup
        if self._spec.rollup is None:
            return {}
        rolls = state.rolls.values()
        return {
            "roll_files": status.roll_files,
            "rolls_followed": len(rolls),
            "rolls_open": sum(not r.closed for r in rolls),
            "rolled_source_bytes": sum(r.source_bytes for r in rolls),
            "rolled_dest_bytes": sum(r.dest_size for r in rolls),
        }

    def status_payload(self, status: CopyStatus) -> bytes:
        # pid, host and the process start time let a reader tell that the writer
        # has exited (or that its pid now belongs to another process).
        entries = list(self.manifest.entries.values())
        payload = {
            "copy_name": status.name,
            "destination": status.destination,
            "state": str(status.state),
            "files_shipped": status.files_shipped,
            "bytes_shipped": status.bytes_shipped,
            "pending_files": status.pending_files,
            "last_cycle_at": _iso(status.last_cycle_at),
            "next_cycle_at": _iso(status.next_cycle_at),
            "last_error": status.last_error,
            "consecutive_failures": status.consecutive_failures,
            "file_errors": [list(item) for item in status.file_errors],
            "unmatched_patterns": list(status.unmatched_patterns),
            "bytes_behind": status.bytes_behind,
            "behind_since": _iso(status.behind_since),
            "oldest_unshipped_age": status.oldest_unshipped_age,
            "last_success_at": _iso(status.last_success_at),
            "last_cycle_seconds": status.last_cycle_seconds,
            "cycles": status.cycles,
            "retries": status.retries,
            "manifest_files": len(entries),
            "manifest_bytes": sum(e.size for e in entries),
            "bytes_read": status.bytes_read,
            # What the destination holds for those (compressed copies: less).
            "manifest_dest_bytes": sum(e.dest_size for e in entries),
            **self._rollup_payload(status),
            **writer_identity(),
        }
        return json.dumps(payload, indent=1).encode()
