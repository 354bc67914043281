"""The pytest plugin, exercised in a fresh pytest run through ``pytester``."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def _plugin_args() -> list[str]:
    # Installed (nox, pip install): pytest finds it through the pytest11 entry point.
    # From a source checkout without installing: name the module explicitly.
    names = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    return [] if "aiologship" in names else ["-p", "aiologship.pytest_plugin"]


def test_entry_point_registered_when_installed() -> None:
    try:
        importlib.metadata.distribution("aiologship")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("aiologship is not installed as a distribution (source checkout)")
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="pytest11")}
    assert eps.get("aiologship") == "aiologship.pytest_plugin"


def test_fixtures_in_a_user_test_suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(__file__).resolve().parents[2]
    monkeypatch.delenv("AIOLOGSHIP_STATE_DIR")  # set by our own conftest; it beats kwargs
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]))
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        test_user="""
        import json
        from aiologship import LogManager
        from aiologship.testing import capture_logs

        async def test_async_manager(log_manager, tmp_path):
            assert isinstance(log_manager, LogManager)
            log = log_manager.get_logger("user")
            log.add(tmp_path / "u.log", json=True)
            log.info("hi", extra={"k": 1})
            await log_manager.aflush()
            line = (tmp_path / "u.log").read_text().strip()
            assert json.loads(line)["k"] == 1
            assert str(log_manager.config.state_dir).startswith(str(tmp_path))

        def test_capture_records(log_records):
            import logging
            logging.getLogger("cap").warning("careful %s", "now", extra={"user": "ann"})
            assert log_records[-1]["message"] == "careful now"
            assert log_records[-1]["user"] == "ann"
            assert log_records[-1]["level"] == "WARNING"

        def test_capture_context_manager():
            import logging
            with capture_logs("ctx") as records:
                logging.getLogger("ctx").error("boom")
            assert [r["message"] for r in records] == ["boom"]

        def test_copy_to_local_destination(local_destination, tmp_path):
            src = tmp_path / "a.log"
            src.write_text("x\\n")
            with LogManager(state_dir=tmp_path / "s") as lm:
                lm.start_hdfs_copy("t", [str(src)], str(local_destination)).flush()
            assert (local_destination / "a.log").read_text() == "x\\n"
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args(), "-W", "error")
    result.assert_outcomes(passed=4)
