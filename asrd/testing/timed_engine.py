"""A test engine whose cost is known: each call takes a fixed time per audio second, and each
engine records the GPU ids Ray gave its actor. Reached through
`engine.kind=asrd.testing.timed_engine:TimedEngine`.

Its settings are `timed-engine.json` in `faults.state_dir` (TimedSettings), written by the test
or benchmark; what it did is appended there as JSON lines (asrd.testing.faults.record):
`engine-devices` (one line per engine start) and `timed-calls` (one line per call: start and
end on the node's monotonic clock, the audio seconds it held). With `exit_at_call`, the first
actor to reach that call exits there in every one of its lives, so that it is restarted until
Ray's restarts are used up and then stays dead: an engine lost for good.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import ray
from omegaconf import DictConfig

from asrd.engines.base import Engine, Hypothesis, Segment
from asrd.runtime.placement import assigned_gpus
from asrd.testing.faults import SAMPLE_RATE, record

SETTINGS_FILE = "timed-engine.json"
DOOMED_FILE = "doomed-actor"  # the id of the actor that exits at `exit_at_call`


@dataclass(frozen=True)
class TimedSettings:
    s_per_audio_s: float = 0.0  # each call sleeps this long per audio second it holds
    exit_at_call: int = 0  # 0: never; else one actor exits at this call of each of its lives

    def write(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / SETTINGS_FILE).write_text(json.dumps(self.__dict__))


class TimedEngine(Engine):
    def __init__(self, faults: DictConfig):
        self.faults = faults
        self.state_dir = Path(faults.state_dir)
        self.settings = TimedSettings(**json.loads((self.state_dir / SETTINGS_FILE).read_text()))
        self.actor = ray.get_runtime_context().get_actor_id()
        self.calls = 0
        record(faults, "engine-devices", actor=self.actor, gpus=assigned_gpus(),
               cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))

    @classmethod
    def from_config(cls, engine_cfg: DictConfig, quality: DictConfig | None = None) -> Engine:
        from asrd import hooks

        faults = hooks.settings()
        if faults is None or not faults.state_dir:
            raise ValueError("the timed engine needs faults.state_dir (its settings are there)")
        return cls(faults)

    @property
    def name(self) -> str:
        return "timed"

    def transcribe(self, segments: list[Segment]) -> list[str]:
        return [h.text for h in self.hypotheses(segments)]

    def hypotheses(self, segments: list[Segment]) -> list[Hypothesis]:
        self.calls += 1
        if self.settings.exit_at_call and self.calls == self.settings.exit_at_call \
                and self._doomed():
            record(self.faults, "timed-exits", actor=self.actor, call=self.calls)
            os._exit(1)
        seconds = [_seconds(s) for s in segments]
        start = time.monotonic()
        time.sleep(self.settings.s_per_audio_s * sum(seconds))
        record(self.faults, "timed-calls", actor=self.actor, start=start, end=time.monotonic(),
               audio_s=sum(seconds), ids=[s.id for s in segments])
        return [Hypothesis(f"{s.id} {x:.2f} seconds") for s, x in zip(segments, seconds)]

    def _doomed(self) -> bool:
        """Whether this actor is the one that exits: the first to ask claims it."""
        marker = self.state_dir / DOOMED_FILE
        try:
            with open(marker, "x") as f:
                f.write(self.actor)
        except FileExistsError:
            pass
        return marker.read_text() == self.actor


def _seconds(segment: Segment) -> float:
    return len(segment.audio) / SAMPLE_RATE if segment.audio is not None else 0.0
