"""Engine placement on a node of 4 or 8 GPUs, by Ray's own accounting (no GPU needed: Ray is told
how many the node has). The timed engine records the GPU ids and CUDA_VISIBLE_DEVICES its actor was given;
the shard's marker records the placement the task saw."""

from collections import Counter

import pytest

from asrd.plan import make_plan
from asrd.runtime.task import run_task
from asrd.testing.faults import read_events
from asrd.testing.timed_engine import TimedSettings
from tests.conftest import make_cfg
from tests.runs import marker

def physical(gpus: int) -> list[str]:
    """Ids that do not start at 0, as SLURM hands a task part of a larger node: the recorded ids
    must be these physical ones."""
    return [str(g) for g in range(10, 10 + gpus)]


# Two engines per GPU on 4 GPUs (8 engine actors to start, not 16 on 8: the same sharing), and
# tensor-parallel pairs on 8.
@pytest.mark.parametrize("gpus,engines,per_engine,tp", [(4, 8, 0.5, 1), (8, 4, 1, 2)],
                         ids=["two-per-gpu", "tensor-parallel-2"])
def test_engines_land_on_distinct_gpus_in_equal_shares(corpus_index, tmp_path, monkeypatch,
                                                      gpus, engines, per_engine, tp):
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", str(gpus))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")  # Ray's accounting: 8 x 0.1 + 1 decode actor
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(physical(gpus)))
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
    assert sorted(per_gpu) == sorted(physical(gpus))  # every GPU used ...
    assert set(per_gpu.values()) == {engines * tp // gpus}  # ... by an equal share of engines
    if tp > 1:
        assert len(set(placed)) == engines  # disjoint groups
    sharing = marker(rd.path)["gpu_engines"]
    assert {g: len(ks) for g, ks in sharing.items()} == dict(per_gpu)

    # What the engines themselves were given is what the marker says.
    seen = read_events(state, "engine-devices")
    assert sorted(tuple(e["gpus"]) for e in seen) == sorted(placed)
    assert all(e["cuda_visible_devices"] == ",".join(e["gpus"]) for e in seen)
