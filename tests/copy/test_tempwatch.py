"""TempWatch against an in-memory destination: a Hypothesis state machine where
temporary files of failed transfers reappear (an HDFS DataNode retrying a create
after our request failed), deletes fail, the destination goes down and time
passes; plus a few examples."""

from __future__ import annotations

from itertools import count
from typing import Any

import pyarrow.fs as pafs
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aiologship._copy._tempwatch import GRACE, TempWatch
from aiologship._copy._transfer import TMP_MARK

TAG, RUN = "0defe140", "3d56339e"


class FakeDest(pafs.FileSystemHandler):  # type: ignore[misc]
    """File names only. ``down`` fails every call; names in ``delete_fails``
    cannot be deleted. Records every call as (name, path)."""

    def __init__(self, files: set[str] | None = None) -> None:
        self.files = set(files or ())
        self.down = False
        self.delete_fails: set[str] = set()
        self.calls: list[tuple[str, str]] = []

    def _call(self, name: str, path: str) -> None:
        self.calls.append((name, path))
        if self.down:
            raise OSError(f"{name}({path}): connection refused")

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        out = []
        for path in paths:
            self._call("get_file_info", path)
            kind = pafs.FileType.File if path in self.files else pafs.FileType.NotFound
            out.append(pafs.FileInfo(path, kind))
        return out

    def delete_file(self, path: str) -> None:
        self._call("delete_file", path)
        if path in self.delete_fails:
            raise PermissionError(f"delete_file({path}): injected failure")
        if path not in self.files:
            raise FileNotFoundError(path)
        self.files.remove(path)

    def get_type_name(self) -> str:
        return "fake-dest"

    def equals(self, other: Any) -> bool:
        return other is self

    def normalize_path(self, path: str) -> str:
        return path

    def _unused(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("TempWatch only asks about and deletes files")

    get_file_info_selector = create_dir = delete_dir = delete_dir_contents = _unused
    delete_root_dir_contents = move = copy_file = open_input_stream = _unused
    open_input_file = open_output_stream = open_append_stream = _unused


def temp(n: int, run: str = RUN) -> str:
    return f"/t/x/.big{n % 3}.log{TMP_MARK}{TAG}-{run}-{n}"


# What no sweep may touch: final files and another run's temporary file.
OTHERS = frozenset({"/t/x/big0.log", "/t/x/big1.log", temp(7, run="0badc0de")})


class WatchMachine(RuleBasedStateMachine):
    """The model: for each watched name, when a sweep first found it absent
    since it was added or last seen (None: not yet)."""

    def __init__(self) -> None:
        super().__init__()
        self.dest = FakeDest(set(OTHERS))
        self.fs = pafs.PyFileSystem(self.dest)
        self.watch = TempWatch(grace=10.0)
        self.now = 1_000.0
        self.names = count()
        self.added: list[str] = []
        self.model: dict[str, float | None] = {}

    @rule(exists=st.booleans())
    def transfer_fails(self, exists: bool) -> None:
        name = temp(next(self.names))
        self.added.append(name)
        if exists:
            self.dest.files.add(name)
        self.watch.add(name)
        self.model[name] = None

    @precondition(lambda self: self.added)
    @rule(data=st.data())
    def reappears(self, data: st.DataObject) -> None:
        self.dest.files.add(data.draw(st.sampled_from(self.added)))

    @precondition(lambda self: self.added)
    @rule(data=st.data())
    def delete_breaks_or_heals(self, data: st.DataObject) -> None:
        self.dest.delete_fails ^= {data.draw(st.sampled_from(self.added))}

    @rule()
    def destination_down_or_up(self) -> None:
        self.dest.down = not self.dest.down

    @rule(seconds=st.floats(0.0, 8.0))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def sweep(self) -> None:
        before = set(self.dest.files)
        calls = len(self.dest.calls)
        self.watch.sweep(self.fs, self.now)
        if self.dest.down:
            # One question, then the rest waits: nothing deleted, nothing forgotten.
            assert len(self.dest.calls) - calls == (1 if self.model else 0)
            assert self.dest.files == before
            assert set(self.model) == {n for n in self.added if n in self.watch}
            return
        for name, absent_since in list(self.model.items()):
            if name in before:
                assert name in self.watch
                assert (name in self.dest.files) == (name in self.dest.delete_fails)
                self.model[name] = None
            elif absent_since is None:
                assert name in self.watch
                self.model[name] = self.now
            elif self.now - absent_since >= self.watch.grace:
                assert name not in self.watch, (name, absent_since, self.now)
                del self.model[name]
            else:
                assert name in self.watch

    @invariant()
    def only_watched_names_are_deleted(self) -> None:
        assert self.dest.files >= OTHERS
        deleted = {path for call, path in self.dest.calls if call == "delete_file"}
        assert deleted <= set(self.added)

    @invariant()
    def watch_is_the_model(self) -> None:
        assert len(self.watch) == len(self.model)
        assert all(name in self.watch for name in self.model)


WatchMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_watch_machine = WatchMachine.TestCase


def test_a_name_is_forgotten_after_the_grace_period_and_not_asked_about_again() -> None:
    dest = FakeDest()
    fs = pafs.PyFileSystem(dest)
    watch = TempWatch()
    watch.add(temp(1))
    watch.sweep(fs, 0.0)  # absent: the wait starts
    watch.sweep(fs, GRACE - 1)
    assert temp(1) in watch
    watch.sweep(fs, GRACE)
    assert len(watch) == 0
    asked = len(dest.calls)
    watch.sweep(fs, GRACE + 1)
    assert len(dest.calls) == asked


def test_reappearing_restarts_the_grace_period() -> None:
    dest = FakeDest()
    fs = pafs.PyFileSystem(dest)
    watch = TempWatch(grace=10.0)
    watch.add(temp(1))
    watch.sweep(fs, 0.0)
    dest.files.add(temp(1))  # the retried create lands late
    watch.sweep(fs, 9.0)
    assert temp(1) not in dest.files
    watch.sweep(fs, 12.0)  # absent since 12, not since 0
    watch.sweep(fs, 21.0)
    assert temp(1) in watch
    watch.sweep(fs, 22.0)
    assert len(watch) == 0


def test_a_name_the_destination_always_fails_on_does_not_block_the_others() -> None:
    class OneBadName(FakeDest):
        def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
            if temp(1) in paths:
                self.calls.append(("get_file_info", temp(1)))
                raise OSError("injected failure")
            return super().get_file_info(paths)

    dest = OneBadName({temp(2)})
    fs = pafs.PyFileSystem(dest)
    watch = TempWatch()
    watch.add(temp(1))
    watch.add(temp(2))
    watch.sweep(fs, 0.0)  # stops at temp(1), which goes last
    assert temp(2) in dest.files
    watch.sweep(fs, 1.0)
    assert temp(2) not in dest.files
    assert temp(1) in watch


def test_grace_covers_the_hdfs_client_retries() -> None:
    # A DataNode's DFSClient retries a cut write for about a minute.
    assert GRACE >= 60.0
