"""Figures as `bench/RESULTS.md` lines: one per figure, with the machine, the date and the
command that measured it (this script's own command line, without `--record`)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def report(bench: str, figures: list[tuple[str, str, str]], record: bool) -> None:
    """Print (figure, value, workload) rows as RESULTS.md lines; append them when `record`."""
    machine = f"vm ({platform.machine()}, {os.cpu_count()} cores)"
    script = Path(sys.argv[0]).name
    cmd = " ".join(["python", f"bench/{script}", *(a for a in sys.argv[1:] if a != "--record")])
    day = dt.date.today().isoformat()
    lines = [f"| {bench} | {f} | {v} | {w} | {machine} | {day} | `{cmd}` |" for f, v, w in figures]
    print("\n".join(lines))
    if record:
        with RESULTS.open("a") as out:
            out.write("\n".join(lines) + "\n")
