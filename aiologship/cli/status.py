"""``aiologship status``: what the state directory says about each copy operation."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .._config import configured_state_dir
from .._copy._statedir import (
    LEGACY_LOCK_NAME,
    MANIFEST_NAME,
    STATUS_NAME,
    engine_lock_path,
    lock_held,
    writer_alive,
)

# Recorded states that claim a live writer; the reader checks that claim.
_LIVE_STATES = frozenset({"new", "running", "stopping"})

EXIT_OK = 0
EXIT_PROBLEM = 1


def add_status_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show the copy operations recorded in the state directory",
        description="Show each copy operation recorded in the state directory: whether a "
        "process runs it now, its last cycle, what is shipped, what is pending, its last "
        "error. Exit 0 when nothing is pending or failing, 1 otherwise.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="default: AIOLOGSHIP_STATE_DIR or ~/.cache/aiologship",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per operation")
    parser.set_defaults(func=_command)


def read_states(state_dir: Path) -> list[dict[str, Any]]:
    """Each copy's status.json, with ``state`` made true for now: a status written
    by a process that has exited says ``stopped (process N exited)`` (its
    ``next_cycle_at`` dropped), one written on another host ``unknown (other host
    H)``. ``recorded_state`` keeps what the file says; ``running_now`` is whether
    a process on this host holds the copy's lock."""
    states: list[dict[str, Any]] = []
    if not state_dir.is_dir():
        return states
    for folder in sorted(p for p in state_dir.iterdir() if p.is_dir()):
        status_file = folder / STATUS_NAME
        if not status_file.exists() and not (folder / MANIFEST_NAME).exists():
            continue
        try:
            data: dict[str, Any] = json.loads(status_file.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except (OSError, ValueError):
            data = {"copy_name": folder.name, "state": "unknown (no status yet)"}
        # An older version kept its lock inside the folder.
        running = lock_held(engine_lock_path(state_dir, folder.name)) or lock_held(
            folder / LEGACY_LOCK_NAME
        )
        data["running_now"] = running
        data["recorded_state"] = recorded = data.get("state")
        if not running and recorded in _LIVE_STATES:
            data["state"] = _without_lock(data)
        data["state_path"] = str(folder)
        data["oldest_unshipped_age"] = _age(data.get("behind_since"))
        states.append(data)
    return states


def _age(since: Any) -> float:
    """Seconds since ``behind_since`` (an ISO time), now: the age of the oldest
    unshipped byte keeps growing after the status was written."""
    if not isinstance(since, str):
        return 0.0
    try:
        return max(0.0, time.time() - datetime.fromisoformat(since).timestamp())
    except ValueError:
        return 0.0


def _without_lock(data: dict[str, Any]) -> str:
    """What a status that claims a live writer means when nobody holds the lock."""
    pid, host = data.get("pid"), data.get("host")
    alive = writer_alive(pid, host, data.get("pid_start"))
    if alive is False:
        data["next_cycle_at"] = None
        return f"stopped (process {pid} exited)"
    if alive is None:
        return f"unknown (other host {host})" if host else "unknown (no writer recorded)"
    # The writer lives but holds no lock here: it lost it (state dir removed) and
    # stops at its next cycle, or an older version wrote this status.
    return f"unknown (process {pid} is alive but holds no lock)"


def _command(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or configured_state_dir()
    states = read_states(state_dir)
    if args.json:
        for state in states:
            print(json.dumps(state))
    elif not states:
        print(f"no copy operations recorded in {state_dir}")
    else:
        for s in states:
            running = "running now" if s["running_now"] else f"last state {s.get('state')}"
            print(f"{s.get('copy_name')} -> {s.get('destination', '?')} ({running})")
            source_bytes = s.get("manifest_bytes", 0)
            dest_bytes = s.get("manifest_dest_bytes", source_bytes)
            packed = f" ({dest_bytes:,} compressed)" if dest_bytes != source_bytes else ""
            print(
                f"  last cycle {s.get('last_cycle_at') or 'never'}; shipped "
                f"{s.get('manifest_files', 0)} files, {source_bytes:,} bytes{packed}; "
                f"pending {s.get('pending_files', 0)}"
            )
            if "rolls_followed" in s:
                print(
                    f"  roll-up: {s['rolls_followed']} roll files followed "
                    f"({s.get('rolls_open', 0)} open), {s.get('rolled_source_bytes', 0):,} "
                    f"bytes in {s.get('rolled_dest_bytes', 0):,}; "
                    f"{s.get('roll_files', 0)} roll files made by the last run"
                )
            if s.get("bytes_behind"):
                print(
                    f"  behind: {s['bytes_behind']:,} bytes, the oldest "
                    f"{s['oldest_unshipped_age']:.0f} s old"
                )
            if s.get("last_error"):
                print(f"  last error: {s['last_error']} "
                      f"({s.get('consecutive_failures', 0)} failed cycles in a row)")  # fmt: skip
    problem = any(s.get("last_error") or s.get("pending_files") for s in states)
    sys.stdout.flush()
    return EXIT_PROBLEM if problem else EXIT_OK
