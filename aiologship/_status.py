"""``aiologship status``: what the state directory says about each copy operation."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import sys
from pathlib import Path
from typing import Any

from ._config import default_state_dir

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
    states: list[dict[str, Any]] = []
    if not state_dir.is_dir():
        return states
    for folder in sorted(p for p in state_dir.iterdir() if p.is_dir()):
        status_file = folder / "status.json"
        if not status_file.exists() and not (folder / "manifest.json").exists():
            continue
        try:
            data: dict[str, Any] = json.loads(status_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {"copy_name": folder.name, "state": "unknown (no status yet)"}
        data["running_now"] = _lock_held(folder / "lock")
        data["state_path"] = str(folder)
        states.append(data)
    return states


def _lock_held(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _command(args: argparse.Namespace) -> int:
    state_dir = args.state_dir or Path(
        os.environ.get("AIOLOGSHIP_STATE_DIR") or default_state_dir()
    )
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
            print(
                f"  last cycle {s.get('last_cycle_at') or 'never'}; shipped "
                f"{s.get('manifest_files', 0)} files, {s.get('manifest_bytes', 0):,} bytes; "
                f"pending {s.get('pending_files', 0)}"
            )
            if s.get("last_error"):
                print(f"  last error: {s['last_error']} "
                      f"({s.get('consecutive_failures', 0)} failed cycles in a row)")  # fmt: skip
    problem = any(s.get("last_error") or s.get("pending_files") for s in states)
    sys.stdout.flush()
    return EXIT_PROBLEM if problem else EXIT_OK
