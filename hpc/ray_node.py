"""An on-node Ray cluster owned by one task: sized from SLURM's allocation, private temp dir.

Each task starts its own head (never attaching to one it finds): several tasks on one node, or
several users, must not share `/tmp/ray` or connect to each other's cluster (ray #20634), and Ray
must not claim the whole node when SLURM gave the task a slice of it (ray #13607). Ports are left
to the OS (GCS port 0), so parallel tasks on a node do not collide (ray #10154).

Stopping: Ray's processes start with the stop signals blocked (hpc.stop.shielded_children), so
SLURM's signal to the whole job step does not take them down under the task while it commits;
on the way out they are killed at once (they hold nothing to keep, and Ray's graceful stop would
wait out a grace period per process that SLURM's KillWait does not leave), and the session
folder is removed. A task that dies without a way out (kill -9, the OOM killer) still takes its
Ray processes and folder along: its reaper (hpc.ray_reaper) wakes when it dies; and a task starting
on a node first sweeps the Ray folders of tasks there that died with their reaper.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from typing import Any, Iterator

import psutil

from hpc.ray_reaper import claim_folder, start_reaper, sweep
from hpc.slurm_env import SlurmEnv
from hpc.stop import shielded_children

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


@contextlib.contextmanager
def local_ray(num_cpus: int | None = None, num_gpus: int | None = None,
              object_store_mb: int = 0, tmp_root: str = "") -> Iterator[dict]:
    """Start a private Ray head for this process; yields its resources; always shuts it down."""
    import ray

    env = SlurmEnv.from_environ()
    cpus = num_cpus if num_cpus is not None else env.cpus
    gpus = num_gpus if num_gpus is not None else env.gpus
    # Short path: Ray's socket names must fit in 107 bytes.
    root = tmp_root or env.tmpdir
    os.makedirs(root, exist_ok=True)
    sweep(root)
    tmp = tempfile.mkdtemp(prefix="ray-", dir=root)
    claim_folder(tmp)
    reaper = start_reaper(tmp)
    os.environ.pop("RAY_ADDRESS", None)
    kwargs = {}
    if object_store_mb:
        kwargs["object_store_memory"] = object_store_mb * 1024 * 1024
    # Ray's C++ core installs a fatal-signal handler that aborts the process on SIGTERM before
    # Python can commit finished rows, and replaces submitit's USR2/TERM handlers: put back the
    # handlers this process had (SLURM sends SIGTERM on scancel, USR2 before the time limit).
    saved = {s: signal.getsignal(s) for s in HANDLED_SIGNALS}
    try:
        with shielded_children():
            ray.init(address="local", num_cpus=cpus, num_gpus=gpus, include_dashboard=False,
                     _temp_dir=tmp, log_to_driver=True, configure_logging=False, **kwargs)
        for sig, handler in saved.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        yield {"cpus": cpus, "gpus": gpus, "temp_dir": tmp}
    finally:
        _shutdown_now(ray, spare=reaper.pid)
        shutil.rmtree(tmp, ignore_errors=True)
        reaper.stdin.close()  # the reaper finds nothing left, and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            reaper.wait(timeout=10)


def _shutdown_now(ray: Any, spare: int) -> None:
    """`ray.shutdown()` that SIGKILLs Ray's processes instead of sending SIGTERM and waiting (they
    have it blocked), then kills whatever this process started that outlived them (Ray's agents,
    a W&B service that did not finish in time), but the reaper `spare`."""
    children = [c for c in psutil.Process().children(recursive=True) if c.pid != spare]
    node = getattr(ray._private.worker, "_global_node", None)
    if node is not None:
        kill_all = node.kill_all_processes
        node.kill_all_processes = lambda **kw: kill_all(**{**kw, "allow_graceful": False})
    ray.shutdown()
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(children, timeout=5)
