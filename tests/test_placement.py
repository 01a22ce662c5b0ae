"""Engine placement on a node of 8 GPUs, by Ray's own accounting (no GPU needed: Ray is told the
node has 8). The timed engine records the GPU ids and CUDA_VISIBLE_DEVICES its actor was given;
the shard's marker records the placement the task saw."""

from collections import Counter

import pytest

from asrd.plan import make_plan
from asrd.runtime.task import run_task
from asrd.testing.faults import read_events
from asrd.testing.timed_engine import TimedSettings
from tests.conftest import make_cfg
from tests.runs import marker

# Ids that are not 0..7, as SLURM hands a task the upper half of a 16-GPU node: the recorded
# ids must be these physical ones.
PHYSICAL = [str(g) for g in range(10, 18)]


@pytest.mark.parametrize("engines,per_engine,tp", [(16, 0.5, 1), (4, 1, 2)],
                         ids=["two-per-gpu", "tensor-parallel-2"])
def test_engines_land_on_distinct_gpus_in_equal_shares(corpus_index, tmp_path, monkeypatch,
                                                      engines, per_engine, tp):
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "8")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")  # Ray's accounting: 16 x 0.1 + 1 decode actor
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(PHYSICAL))
    state = tmp_path / "state"
    TimedSettings().write(state)
    cfg = make_cfg(corpus_index, tmp_path / "run", "run.num_shards=1",
                   "engine.kind=asrd.testing.timed_engine:TimedEngine",
                   f"faults.state_dir={state}", f"engine.num_engines={engines}",
                   f"engine.gpus_per_engine={per_engine}", f"engine.tensor_parallel_size={tp}",
                   "engine.cpus_per_engine=0.1", "pipeline.decode_actors=1")
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]

    placed = [tuple(g) for g in marker(rd.path)["engine_gpus"]]
    assert len(placed) == engines
    assert all(len(g) == tp for g in placed)  # a TP engine holds its tp GPUs itself
    per_gpu = Counter(g for gpus in placed for g in gpus)
    assert sorted(per_gpu) == sorted(PHYSICAL)  # every GPU used ...
    assert set(per_gpu.values()) == {engines * tp // 8}  # ... by an equal share of engines
    if tp > 1:
        assert len(set(placed)) == engines  # disjoint groups
    sharing = marker(rd.path)["gpu_engines"]
    assert {g: len(ks) for g, ks in sharing.items()} == dict(per_gpu)

    # What the engines themselves were given is what the marker says.
    seen = read_events(state, "engine-devices")
    assert sorted(tuple(e["gpus"]) for e in seen) == sorted(placed)
    assert all(e["cuda_visible_devices"] == ",".join(e["gpus"]) for e in seen)
