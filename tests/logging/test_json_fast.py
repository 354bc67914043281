"""JSON lines through orjson (the ``[fast]`` extra): compact, the json module's text.

With orjson installed, a JSON sink writes compact lines (no space after ``:``
and ``,``) and encodes a line of plain values (str, int, bool, None) through
orjson; anything orjson would write otherwise than the json module (a float, an
enum, a datetime, a nested structure, an integer past 64 bits, a lone surrogate)
takes the json encoder, with the same separators. These tests attack that split.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import json
import math
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aiologship import LogManager
from aiologship._logging import _formatting
from aiologship._logging._formatting import _json_default, _make_encoder
from tests.conftest import only_aiologship_sinks, read_lines

pytest.importorskip("orjson", reason="the [fast] extra (orjson) is part of the test extra")


class Color(enum.Enum):
    RED = "red"


plain = st.one_of(
    st.text(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.booleans(),
    st.none(),
)
odd = st.one_of(
    st.floats(),  # NaN and infinities too
    st.integers(min_value=2**64),
    st.text(st.characters(codec=None, categories=["Cs"]), min_size=1, max_size=3),  # surrogates
    st.just(Color.RED),
    st.just(datetime.datetime(2026, 12, 2, 4, 5, 6)),
    st.just(decimal.Decimal("1.10")),
    st.just(uuid.UUID(int=7)),
    st.lists(plain, max_size=3),
    st.dictionaries(st.text(max_size=3), plain, max_size=3),
)
lines = st.dictionaries(st.text(max_size=8), st.one_of(plain, odd), max_size=6)


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


@given(lines)
@example({"n": 2**70, "s": "\ud800", "f": float("nan"), "e": Color.RED})
@example({"small": 6.103515625e-05, "big": 1e16, "neg": -0.0, "inf": float("inf")})
@example({"a": '\x00\x1f\x7f\b\f\n\r\t"\\ \u2028 é 🙂', "i": -(2**63), "b": True, "z": None})
def test_compact_lines_are_the_json_modules_compact_text(data: dict[str, Any]) -> None:
    """Whichever encoder writes a line (orjson for plain values, json for the rest),
    it is the text ``json.dumps`` writes with compact separators, to the byte: a
    line does not change with the path it took."""
    fast = _make_encoder(compact=True)(data)
    reference = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    assert fast == reference
    assert _same(json.loads(fast), json.loads(_make_encoder(compact=False)(data)))


def _write(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    path = tmp_path / f"{name}.log"
    with LogManager() as lm:
        log = lm.get_logger(f"jsonfast.{name}")
        log.add(path, json=True)
        only_aiologship_sinks(log.logger)
        log.info("plain %s", "x", extra={"request_id": "r-1", "n": 3, "ok": True})
        log.info("odd", extra={"big": 2**70, "when": datetime.date(2026, 12, 2), "c": Color.RED})
        log.info("clash", extra={"level": "not mine"})  # python-json-logger's path
        log.info({"a": 1})  # a dict message: python-json-logger's path too
    text = path.read_text(encoding="utf-8")
    assert text.count("\n") == 4
    if name == "fast":
        assert '": ' not in text and '", "' not in text  # compact on every path
    else:
        assert all('"level": "INFO"' in line for line in read_lines(path))
    return [json.loads(line) for line in read_lines(path)]


def test_sinks_write_compact_lines_with_orjson_and_spaced_ones_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _write(tmp_path, "fast")
    monkeypatch.setattr(_formatting, "_orjson", None)  # as if the extra were not installed
    spaced = _write(tmp_path, "spaced")
    for a, b in zip(fast, spaced, strict=True):
        a.pop("timestamp")
        b.pop("timestamp")
        assert {k: v for k, v in a.items() if k != "logger"} == {
            k: v for k, v in b.items() if k != "logger"
        }
    assert (
        fast[1]["big"] == 2**70 and fast[1]["when"] == "2026-12-02" and fast[1]["c"] == "Color.RED"
    )
    assert fast[2]["extra_level"] == "not mine" and fast[2]["level"] == "INFO"
