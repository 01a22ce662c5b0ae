"""Ray's processes die with the task that started them, however the task dies (kill -9 too).

When a task's driver is SIGKILLed, its Ray head's raylet and GCS notice and exit, but Ray's agents
(ray::DashboardAgent, ray::RuntimeEnvAgent) stay, reparented to init, and so does the task's Ray
folder. So a task starts a reaper before Ray: a small process in its own session, with the stop
signals blocked, that blocks reading a pipe whose only writer is the task. The kernel closes the
pipe when the task ends, whatever ended it; the reaper wakes (nothing polls) and SIGKILLs every
process of this user that holds a file open in the task's Ray folder, then removes the folder.
Ray's processes all keep their log files open there, while their command lines are renamed
(`ray::DashboardAgent`), so the open files are what names them.

A reaper killed with its task (SLURM killing a whole job step) leaves the folder behind with its
owner record; the next task on the node sweeps such folders whose owner is gone (`sweep`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import psutil

from hpc.process_ref import ProcessRef
from hpc.stop import shielded_children

log = logging.getLogger("hpc.ray_reaper")

OWNER_FILE = "owner.json"


def holders(folder: str | Path, spare: frozenset[int] = frozenset()) -> list[psutil.Process]:
    """This user's processes (but this one and `spare`) with a file open under `folder`."""
    prefix = os.path.realpath(folder).rstrip("/") + "/"
    skip, uid = spare | {os.getpid()}, os.getuid()
    found = []
    for p in psutil.process_iter(["uids"]):
        if p.pid in skip or p.info["uids"] is None or p.info["uids"].real != uid:
            continue
        with contextlib.suppress(psutil.Error):
            if any(f.path.startswith(prefix) for f in p.open_files()):
                found.append(p)
    return found


def reap(folder: str | Path, spare: frozenset[int] = frozenset()) -> int:
    """SIGKILL the processes (but `spare`) holding files in `folder`, then remove it. Returns
    how many."""
    procs = holders(folder, spare)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=10)
    shutil.rmtree(folder, ignore_errors=True)
    return len(procs)


def claim_folder(folder: str | Path) -> None:
    """Record this process as the owner of a fresh Ray folder (what `sweep` checks)."""
    (Path(folder) / OWNER_FILE).write_text(json.dumps(ProcessRef.me().to_json()))


def sweep(root: str | Path) -> list[Path]:
    """Reap the Ray folders under `root` whose owner on this host is gone. Returns them."""
    swept = []
    for folder in Path(root).glob("ray-*"):
        try:
            owner = ProcessRef.from_json(json.loads((folder / OWNER_FILE).read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not one of ours, or being made right now
        if owner.on_this_host() and not owner.alive_here():
            n = reap(folder)
            log.warning("removed %s and %d processes left by task pid %d", folder, n, owner.pid)
            swept.append(folder)
    return swept


def start_reaper(folder: str | Path) -> subprocess.Popen:
    """The reaper of `folder`; close its stdin (or die) to set it off."""
    with shielded_children():
        return subprocess.Popen([sys.executable, "-m", "hpc.ray_reaper", str(folder)],
                                stdin=subprocess.PIPE, start_new_session=True)


def main() -> None:
    task = os.getppid()
    sys.stdin.buffer.read()  # returns at EOF: the task closed the pipe, or died
    # A task that closed the pipe itself is alive and has shut Ray down: never kill it.
    reap(sys.argv[1], spare=frozenset({task}))


if __name__ == "__main__":
    main()
