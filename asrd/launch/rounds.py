"""The record of an `asrd submit --until-done` chain: its rounds (submissions), the checks its
follow-up jobs made, and the follow-up job that checks next.

One JSON file per chain in RUN_DIR/until-done/, written by `asrd submit` and then by each
follow-up job in turn (one writer at a time: the next follow-up is queued only after its check is
recorded), always atomically. `asrd status` shows the latest chain from it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asrd.rundir import RunDir
from hpc.commit import read_json, write_json
from hpc.array_submit import record_path

COMPLETE = "complete"  # every shard of the chain is done
RESUBMITTED = "resubmitted"  # the shards neither done nor queued went into a new round
WAITING = "waiting"  # none to resubmit, but some still queued in SLURM: checked again after them
GAVE_UP = "gave up"  # shards neither done nor queued, and no rounds left
ERROR = "error"  # the check itself failed (its note says why); the chain stops


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Round:
    """One submission of the chain: round 0 is the user's `asrd submit`, later rounds resubmit."""

    number: int
    record: str  # its submission record (config, tasks, arrays) in RUN_DIR/submissions/
    shards: tuple[int, ...]
    jobs: tuple[str, ...]  # its array job ids
    at: str


@dataclass(frozen=True)
class Check:
    """What a follow-up job found once the jobs it waited for had ended."""

    job: str | None  # the follow-up job that checked
    at: str
    after_round: int
    done: int  # shards of the chain done
    missing: tuple[int, ...]  # neither done nor queued: resubmitted, or given up on
    queued: tuple[int, ...]  # still running or pending in SLURM: left to their jobs
    outcome: str  # COMPLETE, RESUBMITTED, WAITING, GAVE_UP or ERROR
    note: str = ""  # why it gave up or failed


@dataclass(frozen=True)
class FollowUp:
    """The queued job that checks next, and the jobs it waits for."""

    job: str
    after: tuple[str, ...]


@dataclass(frozen=True)
class Chain:
    path: Path
    run_dir: str
    shards: tuple[int, ...]  # what the chain finishes: round 0's shards
    max_rounds: int  # rounds allowed after round 0
    created: str
    rounds: tuple[Round, ...] = ()
    checks: tuple[Check, ...] = ()
    follow_up: FollowUp | None = None  # None: the chain has ended (or never got its job)

    @property
    def resubmissions(self) -> int:
        return max(len(self.rounds) - 1, 0)

    @property
    def ended(self) -> Check | None:
        """The check that ended the chain, if one did."""
        last = self.checks[-1] if self.checks else None
        return last if last is not None and last.outcome in (COMPLETE, GAVE_UP, ERROR) else None

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("path")
        return data

    @classmethod
    def from_json(cls, path: Path, data: dict[str, Any]) -> "Chain":
        follow = data.get("follow_up")
        return cls(
            path=path, run_dir=data["run_dir"], shards=tuple(data["shards"]),
            max_rounds=int(data["max_rounds"]), created=data["created"],
            rounds=tuple(Round(r["number"], r["record"], tuple(r["shards"]), tuple(r["jobs"]),
                               r["at"]) for r in data["rounds"]),
            checks=tuple(Check(c["job"], c["at"], c["after_round"], c["done"],
                               tuple(c["missing"]), tuple(c["queued"]), c["outcome"],
                               c.get("note", "")) for c in data["checks"]),
            follow_up=FollowUp(follow["job"], tuple(follow["after"])) if follow else None)

    def save(self) -> "Chain":
        write_json(self.path, self.to_json())
        return self


def chains_dir(rd: RunDir) -> Path:
    return rd.path / "until-done"


def new_chain(rd: RunDir, shards: list[int], max_rounds: int) -> Chain:
    return Chain(record_path(chains_dir(rd), "until-done"), str(rd.path), tuple(shards),
                 max_rounds, now())


def load_chain(path: str | Path) -> Chain:
    return Chain.from_json(Path(path), read_json(path))


def latest_chain(rd: RunDir) -> Chain | None:
    """The newest chain of the run (file names sort oldest first), if any."""
    folder = chains_dir(rd)
    files = sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")) \
        if folder.is_dir() else []
    return load_chain(files[-1]) if files else None
