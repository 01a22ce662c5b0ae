"""The kept Ray session (`hpc.ray_node.keep_ray`) that the tests' in-process tasks share: it is
handed out only where a fresh one would be the same. (A session of one's own, stopped with its
task: the tasks that tests/test_faults.py runs as processes.)"""

from __future__ import annotations

import os
from pathlib import Path

import ray

from hpc.ray_node import local_ray
from hpc.slurm_env import SlurmEnv


def test_the_kept_session_serves_the_same_request_and_not_a_changed_environment(monkeypatch):
    def probe() -> str | None:  # local: sent by value (this test module is not importable there)
        return os.environ.get("ASRD_KEPT_RAY_PROBE")

    with local_ray(num_cpus=2, num_gpus=0) as first:
        pass
    assert ray.is_initialized()  # kept for the next task
    # Not where tasks started as processes sweep Ray folders whose owner looks gone.
    assert Path(first["temp_dir"]).parent != Path(SlurmEnv.from_environ().tmpdir)
    with local_ray(num_cpus=2, num_gpus=0) as again:
        assert again == first
    monkeypatch.setenv("ASRD_KEPT_RAY_PROBE", "1")  # what Ray's workers inherit changed
    with local_ray(num_cpus=2, num_gpus=0) as changed:
        assert changed["temp_dir"] != first["temp_dir"]
        assert ray.get(ray.remote(probe).remote()) == "1"
    assert not os.path.exists(first["temp_dir"])  # the replaced session was stopped
    with local_ray(num_cpus=1, num_gpus=0) as fewer:
        assert fewer["cpus"] == 1 and ray.cluster_resources()["CPU"] == 1
