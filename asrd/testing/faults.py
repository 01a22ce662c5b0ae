"""Faults on purpose: an engine and a decode hook that fail exactly where a test says.

Tests of the fault paths drive them through these hooks (`faults.*` in the config) instead of
sleeping and sending signals, so that they hold on a machine of any speed:
- `engine.kind=fault` wraps another engine (`faults.inner`) or, without one, answers each segment
  with a text made from its audio. It raises on chosen rows or calls, exits its actor's process
  after N calls, blocks until a file appears, is slow per call, or answers nothing for the long
  segments of chosen rows (as a model giving up on a long window).
- `decode_fault` makes a decode actor's process exit when it reaches a chosen row;
  `stream_fault`, once, when it cuts a chosen segment of a long recording.
- `at_point` makes a command (plan, merge, export) SIGKILL itself, or wait for a file, at a
  named point of its work (`faults.kill_at`, `faults.hold_at`; the points are listed in POINTS).
- `export_exit` makes `asrd export` exit after writing N items.

The production code reaches them only through asrd.hooks: this module is the hook module the
tests select (`ASRD_HOOKS=asrd.testing.faults`, set by tests/conftest.py for every process the
tests start), its `at` dispatches each named point, and the fault engine is found through the
engine registry's plug-in entry point (`asrd.engines` in pyproject.toml). The settings are the
config's `faults` section (asrd.hooks.settings()).
Each hook appends what it did to `faults.state_dir` (JSON lines), which tests read back; a
blocked engine also writes `blocked` there, so a test can wait for that state.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from asrd.audio.pack import Member
from asrd.engines.base import Engine, Hypothesis, InputPreparer, Segment

SAMPLE_RATE = 16000
POLL_S = 0.05  # how often a blocked call looks for its release file


class InjectedFault(RuntimeError):
    """The failure a fault hook raised on purpose."""


def record(faults: DictConfig | None, name: str, **event: Any) -> None:
    """Append one event to `<state_dir>/<name>.jsonl` (one write: whole lines even when several
    processes append)."""
    if faults is None or not faults.state_dir:
        return
    path = Path(faults.state_dir) / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"pid": os.getpid(), **event}) + "\n"
    with open(path, "a") as f:
        f.write(line)


def read_events(state_dir: str | Path, name: str) -> list[dict[str, Any]]:
    path = Path(state_dir) / f"{name}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


# The named points of `at_point`, in the order each command reaches them.
POINTS = (
    "plan.locked",  # `asrd plan` holds the run's plan lock, nothing written yet
    "plan.config_frozen",  # config.yaml written, plan.json not yet
    "merge.tmp_made",  # the new merged folder exists under its temporary name, empty
    "merge.written",  # ... and holds every file and summary.json
    "merge.old_moved",  # the previous merged/ is now merged.old/
    "merge.new_moved",  # the new folder is merged/; merged.old/ not yet removed
    "export.progress_written",  # export.json's new text is in its temporary file, not renamed
    "export.discarding",  # --force recorded an earlier export's files to remove, none removed
    "export.shard_closed",  # a shard's files are whole in its temporary folder, not listed
    "export.file_moved",  # a shard's first file is in the export folder, the shard not recorded
    "task.part_committed",  # a task committed a part of its shard (rows durable, shard not done)
)


def at(point: str, faults: DictConfig | None, **context: Any) -> None:
    """The hook module's entry (asrd.hooks.at): each named point to its fault."""
    if faults is None:
        return
    if point == "decode.item":
        decode_fault(faults, context["item_id"])
    elif point == "decode.segment":
        stream_fault(faults, context["item_id"], context["segment"])
    elif point == "export.item_added":
        export_exit(faults, context["items"])
    else:
        at_point(faults, point, **context)


def export_exit(faults: DictConfig, items: int) -> None:
    """`faults.export_exit_after_items`: the export process dies after that many items."""
    n = faults.export_exit_after_items
    if n and items >= n:
        record(faults, "export-exits", items=items)
        os._exit(137)


def at_point(faults: DictConfig | None, name: str, **context: Any) -> None:
    """At a named point of a command: SIGKILL this process if `faults.kill_at` names it (nothing
    after it runs, as with kill -9; with `kill_times`, only its first arrivals are killed), or, if
    `faults.hold_at` names it, write `held-<name>` into `state_dir` and wait until `release_file`
    exists. `context` (e.g. the shard) goes into the recorded event."""
    if faults is None:
        return
    if faults.kill_at == name and _kill_slot(faults, name):
        record(faults, "points", point=name, outcome="kill", **context)
        os.kill(os.getpid(), signal.SIGKILL)
    if faults.hold_at == name:
        record(faults, "points", point=name, outcome="hold", **context)
        (Path(faults.state_dir) / f"held-{name}").touch()
        while not Path(faults.release_file).exists():
            time.sleep(POLL_S)


def _kill_slot(faults: DictConfig, name: str) -> bool:
    """Whether this arrival at `name` is killed: always without `kill_times`, else while one of
    its `kill_times` slots in `state_dir` is free (taken by an exclusive create, so processes
    racing to the point never take the same one)."""
    if not faults.kill_times:
        return True
    if not faults.state_dir:
        raise ValueError("faults.kill_times counts arrivals in faults.state_dir: set it")
    folder = Path(faults.state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(faults.kill_times):
        try:
            (folder / f"killed-{name}-{slot}").touch(exist_ok=False)
            return True
        except FileExistsError:
            continue
    return False


def decode_fault(faults: DictConfig | None, row_id: str) -> None:
    """In a decode actor: exit its process when it reaches a row listed in `decode_exit_ids`."""
    if faults is not None and row_id in faults.decode_exit_ids:
        record(faults, "decode-exits", id=row_id)
        os._exit(1)


def stream_fault(faults: DictConfig | None, row_id: str, segment: int) -> None:
    """In a decode actor streaming a long recording: exit its process the first time (per
    state_dir) it cuts segment `decode_exit_segment` of a recording."""
    if faults is None or segment != faults.decode_exit_segment or not faults.state_dir:
        return
    marker = Path(faults.state_dir) / "decode-exited"
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return
    record(faults, "decode-exits", id=row_id, segment=segment)
    os._exit(1)


def _settings() -> DictConfig:
    """This process's fault settings (the defaults where no config was loaded)."""
    from asrd import hooks
    from asrd.config import FaultCfg

    found = hooks.settings()
    return OmegaConf.merge(OmegaConf.structured(FaultCfg), found if found is not None else {})


class FaultEngine(Engine):
    """Another engine (or none) behind fault hooks; counts its calls per actor."""

    def __init__(self, engine_cfg: DictConfig, faults: DictConfig,
                 quality: DictConfig | None = None):
        """`faults`: the hook settings of this process (asrd.hooks.settings())."""
        from asrd.engines.registry import build_engine

        self.faults = faults
        self.inner: Engine | None = None
        if faults.inner:
            inner_cfg = OmegaConf.merge(engine_cfg, {"kind": faults.inner})
            self.inner = build_engine(inner_cfg, quality=quality)
        self.calls = 0
        self.lock = threading.Lock()
        self.max_concurrency = self.inner.max_concurrency if self.inner else 1

    @classmethod
    def from_config(cls, engine_cfg: DictConfig, quality: DictConfig | None = None) -> Engine:
        return cls(engine_cfg, _settings(), quality)

    @classmethod
    def check(cls, engine_cfg: DictConfig, packages: bool = True) -> None:
        from asrd.engines.registry import engine_class

        inner = _settings().inner
        if inner:
            engine_class(inner).check(engine_cfg, packages)

    @classmethod
    def checked_as(cls, engine_cfg: DictConfig) -> str:
        """The config checks hold for the wrapped engine."""
        return _settings().inner or engine_cfg.kind

    @property
    def name(self) -> str:
        return f"fault({self.inner.name})" if self.inner else "fault"

    @classmethod
    def packs(cls, engine_cfg: DictConfig) -> bool:
        from asrd.engines.registry import engine_class

        inner = _settings().inner
        return engine_class(inner).packs(engine_cfg) if inner else True

    def input_preparer(self) -> InputPreparer | None:
        return self.inner.input_preparer() if self.inner else None

    def transcribe(self, segments: list[Segment]) -> list[str]:
        return [h.text for h in self.hypotheses(segments)]

    def hypotheses(self, segments: list[Segment]) -> list[Hypothesis]:
        ids = [s.id for s in segments]
        call = self._hooks(ids, "engine-calls")
        got = (self.inner.hypotheses(segments) if self.inner
               else [Hypothesis(_describe(s)) for s in segments])
        record(self.faults, "engine-calls", call=call, ids=ids, outcome="ok",
               seconds=[round(_seconds(s), 2) for s in segments])
        return [Hypothesis("") if s.id in self.faults.blank_ids
                and _seconds(s) > self.faults.blank_over_s else h
                for s, h in zip(segments, got)]

    def hypotheses_packed(self, window: Segment, members: list[Member]
                          ) -> list[Hypothesis | None]:
        """The inner engine's split, or each member's own description; None for the rows in
        `unplaceable_ids` (their words "could not be placed"). The same hooks apply."""
        ids = [m.id for m in members]
        call = self._hooks(ids, "engine-windows")
        got = (self.inner.hypotheses_packed(window, members) if self.inner else
               [Hypothesis(f"{m.id} {m.length_s:.2f} seconds") for m in members])
        record(self.faults, "engine-windows", call=call, ids=ids, outcome="ok")
        return [None if m.id in self.faults.unplaceable_ids else h
                for m, h in zip(members, got)]

    def _hooks(self, ids: list[str | None], log: str) -> int:
        """One engine call's faults, in order: exit, block, delay, raise. Returns its number."""
        with self.lock:
            self.calls += 1
            call = self.calls
        f = self.faults
        if f.exit_after_calls and call > f.exit_after_calls and self._first_exit():
            record(f, log, call=call, ids=ids, outcome="exit")
            os._exit(1)
        if f.block_after_calls >= 0 and call > f.block_after_calls:
            self._block(call)
        if f.call_delay_s:
            time.sleep(f.call_delay_s)
        failing = [i for i in ids if i in f.fail_ids]
        if failing or call in f.raise_on_calls:
            record(f, log, call=call, ids=ids, outcome="raised")
            why = f"row {failing[0]}" if failing else f"call {call}"
            raise InjectedFault(f"injected engine failure on {why}")
        return call

    def _first_exit(self) -> bool:
        """True once per state_dir (every time without one): a restarted actor then carries on."""
        if not self.faults.state_dir:
            return True
        marker = Path(self.faults.state_dir) / "engine-exited"
        marker.parent.mkdir(parents=True, exist_ok=True)
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return False
        return True

    def _block(self, call: int) -> None:
        """Wait for the release file; say so first, so that a test can wait for this state."""
        record(self.faults, "engine-blocked", call=call)
        if self.faults.state_dir:
            (Path(self.faults.state_dir) / "blocked").touch()
        release = Path(self.faults.release_file or "/nonexistent/asrd-release")
        while not release.exists():
            time.sleep(POLL_S)

    def close(self) -> None:
        if self.inner:
            self.inner.close()


def _seconds(segment: Segment) -> float:
    return len(segment.audio) / SAMPLE_RATE if segment.audio is not None else 0.0


def _describe(segment: Segment) -> str:
    """A text that depends on the segment (its row and length), so that mix-ups show."""
    return f"{segment.id} {_seconds(segment):.2f} seconds"
