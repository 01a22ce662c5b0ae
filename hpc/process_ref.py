"""A process named so that another process, later, can tell whether it still runs: host, pid and
start time (a pid alone may have been reused by then)."""

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
    started: float  # psutil's create_time of the process

    @classmethod
    def me(cls) -> "ProcessRef":
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ProcessRef":
        return cls(str(d["host"]), int(d["pid"]), float(d["started"]))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def alive_here(self) -> bool:
        """It runs on this host and is still the process that was named."""
        if not self.on_this_host():
            return False
        try:
            return abs(psutil.Process(self.pid).create_time() - self.started) < 1.0
        except psutil.Error:
            return False
