"""Context in the places users meet it: the example script, and the pytest
plugin's fixtures inside a user's own test run (pytester, a fresh pytest)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[2]


def test_the_example_gives_every_record_its_request_id(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "request_context.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
    ).stdout.splitlines()
    # 200 requests, each with 5 records: start, child, thread, library, done.
    assert out[-1].startswith("200 requests, 1000 records")
    counts = [line for line in out[:-1] if line.endswith(" records")]
    assert len(counts) == 200
    assert all(line.endswith(": 5 records") for line in counts)
    assert not any(line.startswith("<none>") for line in counts)


def _plugin_args() -> list[str]:
    names = {ep.name for ep in importlib.metadata.entry_points(group="pytest11")}
    return [] if "aiologship" in names else ["-p", "aiologship.pytest_plugin"]


def test_log_records_and_assert_fields_in_a_user_suite(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIOLOGSHIP_STATE_DIR")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(
        test_user="""
        import logging
        import pytest
        import aiologship
        from aiologship.testing import assert_fields

        async def test_request(log_manager, log_records, tmp_path):
            log = log_manager.get_logger("shop")
            log.add(tmp_path / "s.log")
            with aiologship.context(request_id="r-42"):
                log.info("order placed")
                logging.getLogger("payments").warning("card declined")
            log.info("after the request")
            assert_fields(log_records[:2], request_id="r-42")
            assert "request_id" not in log_records[2]
            with pytest.raises(AssertionError, match="1 of 3 records do not carry"):
                assert_fields(log_records, request_id="r-42")
        """
    )
    result = pytester.runpytest_subprocess(*_plugin_args(), "-W", "error")
    result.assert_outcomes(passed=1)
