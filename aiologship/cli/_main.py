"""The ``aiologship`` command line: ``main()`` and the error report.

``main()`` dispatches subcommands with argparse; each subcommand lives in its own
module (``copy``, ``status``, ``demo``) and registers itself through an
``add_*_command(subparsers)`` function.

Exit codes: 0 success; 1 the copy did not complete (files pending or failing,
destination down, copy already running elsewhere); 2 bad arguments or
configuration; 130 aborted by a second Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence

from .._exceptions import AiologshipError, ConfigError
from .._fs import scrub
from ._exits import EXIT_ABORTED, EXIT_INCOMPLETE, EXIT_USAGE
from .copy import add_copy_command
from .demo import add_demo_command
from .status import add_status_command

Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiologship", description="Asyncio-native logging and log shipping."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_copy_command(subparsers)
    add_status_command(subparsers)
    add_demo_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Command | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return func(args)
    except BaseExceptionGroup as group:
        # anyio task groups wrap whatever a task raised, even a lone error.
        leaves = list(_leaves(group))
        if any(isinstance(e, KeyboardInterrupt) for e in leaves):
            return EXIT_ABORTED
        known = [e for e in leaves if isinstance(e, AiologshipError | OSError)]
        if len(known) < len(leaves):
            raise  # a bug: keep the whole traceback
        return _report(args, known)
    except (AiologshipError, OSError) as exc:
        return _report(args, [exc])


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _report(args: argparse.Namespace, errors: Sequence[BaseException]) -> int:
    """One ``aiologship: error:`` line for errors of ours or of the OS (a full or
    read-only state dir), secrets of the destination scrubbed."""
    message = str(errors[0]) or type(errors[0]).__name__
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more)"
    destination = getattr(args, "destination", None)
    if isinstance(destination, str):
        message = scrub(message, destination)
    print(f"aiologship: error: {message}", file=sys.stderr)
    return EXIT_USAGE if isinstance(errors[0], ConfigError) else EXIT_INCOMPLETE
