"""A process named so that another process, later, can tell whether it still runs: host, pid and
start time (a pid alone may have been reused by then).

The start is compared in clock ticks since boot (/proc/PID/stat), not as a wall-clock time: the
wall-clock time psutil derives for a running process moves when the clock steps (a VM paused,
resumed or moved), and a live owner must never be taken for a dead one (its Ray processes would
be swept away under it)."""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from typing import Any

import psutil


@dataclass(frozen=True)
class ProcessRef:
    host: str
    pid: int
    started: float  # psutil's create_time of the process (for people reading the record)
    ticks: int | None = None  # its start in clock ticks since boot; None in older records

    @classmethod
    def me(cls) -> "ProcessRef":
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time(),
                   start_ticks(os.getpid()))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ProcessRef":
        ticks = d.get("ticks")
        return cls(str(d["host"]), int(d["pid"]), float(d["started"]),
                   None if ticks is None else int(ticks))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def alive_here(self) -> bool:
        """It runs on this host and is still the process that was named."""
        if not self.on_this_host():
            return False
        try:
            if self.ticks is not None:
                return start_ticks(self.pid) == self.ticks
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except (psutil.Error, OSError, ValueError, IndexError):
            return False


def start_ticks(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat); None where
    there is no /proc (the wall-clock comparison is used then)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            raise  # the process is gone
        return None
