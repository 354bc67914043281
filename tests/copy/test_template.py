"""Destination templates (``…/{date:%Y/%m/%d}/{hostname}/``) on real local
destinations, with an injected clock: partitions per date and host, a file that
lives across midnight stays in its first partition, bad templates refused."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from aiologship._copy import CopyEngine, CopySpec
from aiologship._copy._template import split_destination
from aiologship._exceptions import ConfigError, CopyError
from tests.copy.test_engine import Env

pytestmark = pytest.mark.anyio

HOST = socket.gethostname()
BEFORE_MIDNIGHT = datetime(2026, 12, 1, 23, 59, 30, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def engine(env: Env, clock: Clock, destination: str, **params: Any) -> CopyEngine:
    defaults = {
        "copy_name": "app",
        "path_patterns": [str(env.src / "*.log*")],
        "copy_interval": None,
        "retry_delay": 0,
        "timezone": UTC,
    }
    spec = CopySpec.from_params(hdfs_destination=destination, **{**defaults, **params})
    e = CopyEngine(spec, state_dir=env.state, clock=clock, sleep=env.sleep)
    await e.open()
    env.engines.append(e)
    return e


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("destination", "reason"),
    [
        ("/logs/{day}/", "unknown template field {day}"),
        ("/logs/{date:%Y/%Q}/", "unknown directive %Q"),
        ("/logs/{hostname:>10}/", "only {date} takes a format"),
        ("/logs/{date!r}/", "no conversions"),
        ("/logs/{date/", "a literal brace is written {{"),
        ("/logs/}/", "a literal brace is written {{"),
        ("hdfs://nn{hostname}:8020/logs/", "belong in the path"),
        ("hdfs://nn:8020/logs/{date}?user=x", "no query"),
        ("/logs/{date:..}/", "relative folder path"),
        ("/logs/{date:%Y/}/{hostname}/", "must render to folder names"),
        ("hdfs://nn:8020/logs/{date}//{hostname}/", "relative folder path"),
    ],
)
def test_bad_templates_are_refused_naming_the_template(destination: str, reason: str) -> None:
    with pytest.raises(ConfigError, match="hdfs_destination") as caught:
        CopySpec.from_params(
            copy_name="c", path_patterns=["/x/*.log"], hdfs_destination=destination
        )
    assert reason in str(caught.value)
    assert destination.split("{")[0].rstrip("/") in str(caught.value)


def test_credentials_stay_redacted_in_a_template_error() -> None:
    with pytest.raises(ConfigError) as caught:
        CopySpec.from_params(
            copy_name="c",
            path_patterns=["/x/*.log"],
            hdfs_destination="hdfs://alice:s3cret@nn:8020/logs/{nope}/",
        )
    assert "s3cret" not in str(caught.value) and "{nope}" in str(caught.value)


def test_the_base_is_what_precedes_the_first_field() -> None:
    spec = CopySpec.from_params(
        copy_name="c",
        path_patterns=["/x/*.log"],
        hdfs_destination="hdfs://nn:8020/logs/{{raw}}/app-{date:%Y}/{hostname}/",
    )
    assert spec.destination_base == "hdfs://nn:8020/logs/{raw}/"
    assert spec.template.text == "app-{date:%Y}/{hostname}/"
    plain = CopySpec.from_params(
        copy_name="c", path_patterns=["/x/*.log"], hdfs_destination="/logs/{{literal}}"
    )
    assert plain.destination_base == "/logs/{literal}" and not plain.template


# ---------------------------------------------------------------- partitions


async def test_partitions_per_date_and_host_fixed_for_a_files_life(env: Env) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    dest = f"{env.dst}/{{date:%Y/%m/%d}}/{{hostname}}/"
    env.write("app.log", b"first day\n")
    first = await engine(env, clock, dest)
    assert (await first.flush()).ok
    day1 = f"2026/12/01/{HOST}"
    assert env.dest_files() == {f"{day1}/app.log": b"first day\n"}

    clock.now += 60  # past midnight: app.log lives on in its first partition
    env.write("app.log", b"second day\n", mode="ab")
    env.write("new.log", b"born on day two\n")
    result = await first.flush()
    assert result.ok and (result.files_appended, result.files_replaced) == (1, 1)
    day2 = f"2026/12/02/{HOST}"
    assert env.dest_files() == {
        f"{day1}/app.log": b"first day\nsecond day\n",
        f"{day2}/new.log": b"born on day two\n",
    }
    await first.stop()

    # A restart (the partition comes from the manifest), a rename rotation and a
    # new file under the old name: the renamed file moves within its partition.
    clock.now += 86_400
    os.rename(env.src / "app.log", env.src / "app.log.1")
    env.write("app.log", b"day three\n")
    again = await engine(env, clock, dest)
    result = await again.flush()
    assert result.ok and result.bytes_shipped == len(b"day three\n")
    assert env.dest_files() == {
        f"{day1}/app.log.1": b"first day\nsecond day\n",
        f"{day2}/new.log": b"born on day two\n",
        f"2026/12/03/{HOST}/app.log": b"day three\n",
    }
    saved = json.loads((again.state_path / "manifest.json").read_bytes())["files"]
    assert saved[str(env.src / "app.log.1")]["part"] == f"{day1}/"


async def test_the_date_is_in_the_given_time_zone(env: Env) -> None:
    env.write("a.log", b"x\n")
    plus8 = timezone(timedelta(hours=8))  # 23:59:30 UTC is 07:59:30 the next day there
    e = await engine(env, Clock(BEFORE_MIDNIGHT), f"{env.dst}/{{date}}/", timezone=plus8)
    await e.flush()
    assert list(env.dest_files()) == ["2026-12-02/a.log"]


async def test_node_id_copy_name_and_compression_together(env: Env) -> None:
    env.write("a.log", b"x\n")
    dest = f"{env.dst}/{{copy_name}}/{{node_id}}-{{hostname}}/"
    e = await engine(env, Clock(BEFORE_MIDNIGHT), dest, node_id="n1", compression="gzip")
    await e.flush()
    assert list(env.dest_files()) == [f"app/n1-{HOST}/a.log.gz"]


async def test_without_a_node_id_node_id_is_the_host_name(env: Env) -> None:
    env.write("b.log", b"y\n")
    e = await engine(env, Clock(BEFORE_MIDNIGHT), f"{env.dst}/{{node_id}}/")
    await e.flush()
    assert list(env.dest_files()) == [f"{HOST}/b.log"]


async def test_preserve_structure_under_a_partition(env: Env) -> None:
    env.write("sub/deep.log", b"deep\n")
    e = await engine(
        env,
        Clock(BEFORE_MIDNIGHT),
        f"{env.dst}/{{date:%Y%m%d}}/",
        path_patterns=[str(env.src / "**" / "*.log")],
        root_dir=str(env.src),
        preserve_structure=True,
    )
    await e.flush()
    assert env.dest_files() == {"20261201/sub/deep.log": b"deep\n"}


DAILY = "{date:%Y/%m/%d}/"


async def shipped_then_manifest_lost(env: Env, data: bytes) -> Clock:
    """app.log shipped on 2026-12-01, then the manifest deleted; the clock a day on."""
    clock = Clock(BEFORE_MIDNIGHT)
    env.write("app.log", data)
    first = await engine(env, clock, f"{env.dst}/{DAILY}")
    await first.flush()
    await first.stop()
    (first.state_path / "manifest.json").unlink()
    clock.now += 86_400
    return clock


async def test_a_lost_manifest_keeps_files_in_their_partitions(env: Env) -> None:
    """The day after, without a manifest: the files already shipped are found
    in their partitions (by content) and go on growing there."""
    clock = await shipped_then_manifest_lost(env, b"day one\n")
    env.write("app.log", b"day two\n", mode="ab")
    env.write("new.log", b"new\n")
    again = await engine(env, clock, f"{env.dst}/{DAILY}")
    result = await again.flush()
    assert result.ok and result.bytes_shipped == len(b"day two\n" + b"new\n")
    assert env.dest_files() == {
        "2026/12/01/app.log": b"day one\nday two\n",
        "2026/12/02/new.log": b"new\n",
    }


async def test_a_lost_manifest_never_adopts_another_files_bytes(env: Env) -> None:
    clock = await shipped_then_manifest_lost(env, b"old version\n")
    os.unlink(env.src / "app.log")
    env.write("app.log", b"another file\n")  # same name, other bytes
    again = await engine(env, clock, f"{env.dst}/{DAILY}")
    assert (await again.flush()).ok
    assert env.dest_files() == {
        "2026/12/01/app.log": b"old version\n",  # left as it was
        "2026/12/02/app.log": b"another file\n",
    }


async def test_a_copier_killed_before_its_save_on_another_day(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shipped on day one, not recorded (the manifest save never came), restarted
    on day two: the file is adopted in its day-one partition, not sent again."""
    from tests.copy.test_kill import _kill_before_save

    clock = Clock(BEFORE_MIDNIGHT)
    dest = f"{env.dst}/{{date:%Y/%m/%d}}/"
    env.write("saved.log", b"saved\n")
    first = await engine(env, clock, dest)
    await first.flush()
    env.write("late.log", b"late\n")
    with monkeypatch.context() as m:
        _kill_before_save(m)
        with pytest.raises(CopyError):
            await first.flush()
    await first.stop(final_cycle=False)
    clock.now += 86_400
    again = await engine(env, clock, dest)
    result = await again.flush()
    assert result.ok and result.files_shipped == 0
    assert env.dest_files() == {
        "2026/12/01/saved.log": b"saved\n",
        "2026/12/01/late.log": b"late\n",
    }


# ---------------------------------------------------------------- properties

_PIECES = st.sampled_from(["%Y", "%m", "%d", "%H", "%j", "%G-W%V", "/", "-", "_", "x", "{{", "}}"])


@given(
    pieces=st.lists(_PIECES, min_size=1, max_size=8),
    when=st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1)),
    host=st.sampled_from(["h", "node-1.example.org", "a.b"]),
)
@settings(max_examples=100, deadline=None)
def test_every_partition_a_template_renders_is_found_again(
    pieces: list[str], when: datetime, host: str
) -> None:
    """What ``render`` makes, the listing's pattern recognises (the lost-manifest
    search relies on it), and it is a relative folder path."""
    fmt = "".join(p for p in pieces if p not in ("{{", "}}"))
    literal = "".join(p for p in pieces if p in ("{{", "}}"))
    text = f"logs/{{date:{fmt}}}{literal}/{{hostname}}/"
    try:
        base, template = split_destination(f"/base/{text}", text)
    except ConfigError:
        assume(False)  # e.g. a format that renders to nothing or to ".."
    assert base == "/base/logs/"
    part = template.render(when, hostname=host, node_id=None, copy_name="c")
    assert part.endswith("/") and not part.startswith("/")
    assert all(p not in ("", ".", "..") for p in part[:-1].split("/"))
    pattern = template.pattern(hostname=host, node_id=None, copy_name="c")
    assert pattern.fullmatch(part), (template, part)
