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
import gc
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterator

import psutil

from hpc.ray_reaper import claim_folder, start_reaper, sweep
from hpc.slurm_env import SlurmEnv
from hpc.stop import shielded_children

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


FREE_WAIT_S = 30.0  # how long a kept session's CPUs may take to come back before it is replaced


@dataclass
class _Kept:
    """The session `keep_ray` holds: what started it, the stack that stops it, and how many
    `local_ray` blocks use it now."""

    stack: contextlib.ExitStack
    unheeded: frozenset[str]
    root: str
    key: tuple = ()
    resources: dict | None = None
    users: int = 0

    def key_of(self, *args: object) -> tuple:
        return (*args, sorted(kv for kv in os.environ.items() if kv[0] not in self.unheeded))

    def stop(self) -> None:
        self.stack.close()
        self.resources = None


_kept: _Kept | None = None


@contextlib.contextmanager
def keep_ray(root: str, unheeded: tuple[str, ...] = ()) -> Iterator[None]:
    """Within this block, `local_ray` keeps the session it starts and hands it to later calls
    where a fresh one would be the same: the same resources asked for, from the same environment
    (what Ray's processes inherit, but the variables named `unheeded`, which they do not read),
    all of them free again (the last task's actors gone; a session still holding some after
    FREE_WAIT_S is replaced). Its Ray folder is made under `root` (unless a call names its
    own), a folder of its own: a task starting elsewhere sweeps the Ray folders in its root
    whose owner looks gone, and a session that outlives many tasks must not be taken for one's.
    The session stops when the block ends. For a process that runs many short tasks whose Ray
    start-up and stop (10-20 s on 2 loaded cores) are not what they exercise: the test suite.
    Nothing else uses it."""
    global _kept
    _kept = _Kept(contextlib.ExitStack(), frozenset(unheeded), root)
    try:
        yield
    finally:
        kept, _kept = _kept, None
        kept.stop()


@contextlib.contextmanager
def local_ray(num_cpus: int | None = None, num_gpus: int | None = None,
              object_store_mb: int = 0, tmp_root: str = "") -> Iterator[dict]:
    """Start a private Ray head for this process; yields its resources; always shuts it down
    (within `keep_ray`: the kept session, see there)."""
    env = SlurmEnv.from_environ()
    cpus = num_cpus if num_cpus is not None else env.cpus
    gpus = num_gpus if num_gpus is not None else env.gpus
    root = tmp_root or env.tmpdir
    kept = _kept
    if kept is None:
        with _own_ray(cpus, gpus, object_store_mb, root) as res:
            yield res
        return
    if kept.users == 0 and kept.resources is not None and (
            kept.key != kept.key_of(cpus, gpus, object_store_mb, root) or not _all_free()):
        kept.stop()
    if kept.resources is None:
        kept.resources = kept.stack.enter_context(_own_ray(cpus, gpus, object_store_mb,
                                                           tmp_root or kept.root))
        kept.key = kept.key_of(cpus, gpus, object_store_mb, root)  # with what Ray set
    kept.users += 1  # a block inside another one's (a task under a test's actors) shares it
    try:
        yield kept.resources
    finally:
        kept.users -= 1


def _all_free() -> bool:
    """Whether every CPU and GPU of the running session is free, waiting up to FREE_WAIT_S for
    actors whose handles were dropped (those in reference cycles go with a collection)."""
    import ray

    gc.collect()
    total = ray.cluster_resources()
    deadline = time.monotonic() + FREE_WAIT_S
    while True:
        free = ray.available_resources()
        if all(free.get(k, 0.0) >= total.get(k, 0.0) - 1e-6 for k in ("CPU", "GPU")):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


@contextlib.contextmanager
def _own_ray(cpus: int, gpus: int, object_store_mb: int, root: str) -> Iterator[dict]:
    import ray

    # Short path (`root`): Ray's socket names must fit in 107 bytes.
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
