"""The README's demo, as a test: every record on disk, every file shipped intact.

It also guards close()'s order (drain the records, then the final copy cycle):
with the order reversed the shipped JSON files miss their tails.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from aiologship.cli.demo import main


@pytest.mark.timeout(120)
async def test_quickstart_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # pytest's capture handler on the root logger formats every record in the
    # caller and slows the producers until the drain always wins the race with the
    # final cycle; without it the order of close() is really tested.
    for name in ("ingest", "score"):
        logging.getLogger(name).propagate = False
    await main(tmp_path, "Asia/Singapore")  # raises SystemExit on any mismatch
    out = capsys.readouterr().out
    assert "(100,000 to files, 3 to the terminal)" in out and "dropped: 0" in out
    assert "+08:00" in out
    shipped = sorted(p.name for p in (tmp_path / "shipped" / "logs").iterdir())
    assert shipped == ["ingest.json", "score.json"]
