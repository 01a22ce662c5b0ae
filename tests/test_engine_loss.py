"""An engine lost for good (its GPU gone: it dies in every life until Ray's restarts are used
up) does not stop the shard: the other engines take what it held and what is left, and every row
is written once, with its own text. Driven by the timed engine's exit hook (one actor exits at
the first call of each of its lives), not by signals or clocks."""

from collections.abc import Iterator

import pytest
import ray

from asrd.plan import make_plan
from asrd.runtime.engine import EngineStage, Transcribed
from asrd.runtime.pipeline import Pipeline
from asrd.runtime.task import run_task
from asrd.testing.faults import read_events
from asrd.testing.timed_engine import TimedSettings
from hpc.ray_node import local_ray
from tests.conftest import make_cfg
from tests.runs import assert_exactly_once, shard_rows
from tests.test_engine_balance import segments

RESTARTS = 2  # the engine actors' max_restarts (asrd.runtime.pipeline)


def timed_cfg(index, tmp_path, *extra: str):
    state = tmp_path / "state"
    TimedSettings(exit_at_call=1).write(state)
    return state, make_cfg(index, tmp_path / "run", "run.num_shards=1",
                           "engine.kind=asrd.testing.timed_engine:TimedEngine",
                           f"faults.state_dir={state}", "engine.num_engines=2",
                           "engine.cpus_per_engine=0.1", "engine.batch_size=1",
                           "engine.calls_in_flight=1", *extra)


@pytest.fixture
def two_engines(corpus_index, tmp_path) -> Iterator[tuple[Pipeline, object]]:
    state, cfg = timed_cfg(corpus_index, tmp_path, "pipeline.decode_actors=1")
    with local_ray(num_cpus=2, num_gpus=0):
        p = Pipeline(cfg, 2, 0)
        yield p, state
        p.close(wait=False)


def test_the_stage_stops_calling_a_lost_engine_and_every_segment_is_transcribed(two_engines):
    pipe, state = two_engines
    stage = EngineStage(pipe.engines, batch_size=1, calls_in_flight=1, retries=2,
                        prepared=False)
    stage.add(segments([1.0] * 12))
    done: list[str] = []
    while stage.busy():  # in lockstep: every call out is answered before the next feed
        stage.feed(nothing_more_coming=True)
        for ref in stage.in_flight():
            ray.wait([ref])
            out = stage.complete(ref)
            assert out is None or isinstance(out, Transcribed), out
            if out is not None:
                done += [s.id for s in out.segments]
    assert sorted(done) == sorted(f"r{i}" for i in range(12))  # each once, none failed
    exits = read_events(state, "timed-exits")
    assert len(exits) == 1 + RESTARTS and len({e["actor"] for e in exits}) == 1
    lost = pipe.engines.index(next(a for a in pipe.engines
                                   if a._actor_id.hex() == exits[0]["actor"]))
    assert stage.health.gone == [k == lost for k in range(2)]
    answered = read_events(state, "timed-calls")
    assert {c["actor"] for c in answered} == {a._actor_id.hex() for a in pipe.engines} - {
        exits[0]["actor"]}


def test_a_shard_with_an_engine_lost_completes_with_every_row_once(corpus_index, tmp_path):
    state, cfg = timed_cfg(corpus_index, tmp_path, "pipeline.items_per_decode_task=1")
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    assert_exactly_once(rd.path, 8)
    rows = shard_rows(rd.path)
    assert all(r["error"] is None and r["text"].startswith(f"{r['id']} ") for r in rows), rows
    exits = read_events(state, "timed-exits")
    assert exits and len({e["actor"] for e in exits}) == 1
