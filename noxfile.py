"""Sessions: tests (the whole suite), demo, bench, lint; soak (not by default)."""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
# A fresh machine may have only one of PYTHONS: ``nox -s tests`` runs on what is there
# and skips the rest. CI passes --error-on-missing-interpreters to require all three.
nox.options.error_on_missing_interpreters = False
# uv makes each session's virtualenv in seconds (pip took about a minute per Python
# here, most of it resolving and byte-compiling Ray); plain virtualenv + pip when uv
# is not installed. Never download an interpreter: a missing one is skipped (or, in
# CI, an error), as with virtualenv.
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.download_python = "never"
# uv does not byte-compile by default (pip does), and with PYTHONDONTWRITEBYTECODE
# set (as on CI here) every process of the suite then compiles Ray, pyarrow and
# FastAPI again: 2.7 s of CPU per import against 1.1 s, in every Ray worker and
# every subprocess. Compiling at install costs about 8 s per session.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")

PYTHON = "3.11"
PYTHONS = ["3.11", "3.12", "3.13"]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The whole suite: unit, delivery, copy, HDFS mini-cluster and Ray cluster tests."""
    session.install("-e", ".[test,ray]")
    # One xdist worker per CPU; the tests sharing the Ray cluster or the HDFS
    # mini-cluster each stay in one worker (tests/conftest.py). On this project's
    # 2-core machine, whole suite on 3.11: 234 s against 394 s in one process (.ci/run:
    # 217-236 s per Python, 786 s for all three with the installs).
    # The slowest tests in every run's output: where the 20-minute budget goes.
    session.run(
        "python", "-m", "pytest", "-n", "auto", "--durations=15",
        *session.posargs,
    )
    if not session.posargs:
        # The install built the C module (_speedups), so the run above used it; the
        # logging tests once more on the Python path it replaces (about 30 s).
        session.run(
            "python", "-m", "pytest", "-n", "auto", "tests/logging",
            env={"AIOLOGSHIP_PURE_PYTHON": "1"},
        )


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """100 async tasks log to local JSON files; the logs are shipped to a local folder."""
    session.install(".")
    session.run("aiologship", "demo", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks, printed as ratios against anchors measured in the same run."""
    session.install("-e", ".[bench]")
    for script in (
        "benchmarks/bench_logging.py",
        "benchmarks/bench_context.py",
        "benchmarks/bench_metrics.py",
        "benchmarks/bench_copy.py",
        "benchmarks/bench_compress.py",
        "benchmarks/bench_hdfs.py",
    ):
        session.run("python", script, *session.posargs)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """Long runs, not in CI: 10 minutes of logging, rotation and shipping to the HDFS
    mini-cluster under injected faults (``nox -s soak -- --minutes 2``, ``-- --local``
    pass through to the script), then the copy and roll-up model tests' long
    profile."""
    session.install("-e", ".[test]")
    session.run("python", "benchmarks/soak.py", *session.posargs)
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/copy/test_model.py",
        "tests/copy/test_rollup_model.py",
        "-p",
        "no:cacheprovider",
        "--timeout",
        "3600",
        env={"AIOLOGSHIP_MODEL_PROFILE": "long"},
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff (lint and format), mypy strict, and the import contracts of pyproject.toml.
    ``[test]``: mypy checks the pytest plugin against pytest's own types."""
    session.install("-e", ".[test]", "ruff", "mypy", "types-PyYAML", "import-linter")
    session.run("ruff", "check", "aiologship", "tests", "benchmarks", "examples")
    session.run("ruff", "format", "--check", "aiologship", "tests", "benchmarks", "examples")
    session.run("mypy", "aiologship")
    session.run("lint-imports")
