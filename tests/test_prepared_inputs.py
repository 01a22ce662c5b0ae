"""Engine inputs prepared in the decode actors (Whisper's log-mel features from the transformers
engine's `input_preparer`), end to end on real Ray with a tiny random Whisper (offline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from asrd import config as asrd_config
from asrd.audio import decode, split_points
from asrd.engines import Segment, build_engine
from asrd.index import build_index
from asrd.testing.tiny_models import build_whisper
from tests.bad_audio import make_long_silence
from tests.runs import assert_exactly_once, cli_args, running, shard_rows, wait_until

pytest.importorskip("transformers")

MAX_SEGMENT_S = 30  # the model's window (a longer setting is refused when the config loads)


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory) -> Path:
    return build_whisper(tmp_path_factory.mktemp("tiny-whisper"))


def engine_overrides(whisper_dir: Path) -> list[str]:
    return ["engine.kind=transformers", f"engine.model={whisper_dir}", "engine.compute_type=int8",
            "engine.max_new_tokens=8", f"audio.max_segment_s={MAX_SEGMENT_S}",
            "audio.vad.enabled=false"]  # the silent 35 s file must reach the engine, in pieces


def write_index(folder: Path, paths: list[Path]) -> Path:
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"{i}-{p.name}", "path": str(p),
                                            "language": "en"}) + "\n"
                                for i, p in enumerate(paths)))
    out = folder / "index.parquet"
    build_index(manifest, out)
    return out


def corpus_files(corpus: Path) -> list[Path]:
    return [corpus / json.loads(line)["path"]
            for line in (corpus / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def direct_texts(whisper_dir, corpus) -> dict[str, str]:
    """Each corpus file's text from `engine.transcribe` on raw audio in this process, segmented
    and joined as the pipeline does."""
    engine = build_engine(asrd_config.load(overrides=engine_overrides(whisper_dir)).engine)
    try:
        out = {}
        for path in corpus_files(corpus):
            x = decode(str(path), 16000)
            texts = engine.transcribe([Segment(x[a:b], "en")
                                       for a, b in split_points(x, 16000, MAX_SEGMENT_S)])
            out[str(path)] = " ".join(t.strip() for t in texts if t.strip())
    finally:
        engine.close()
    assert len(set(out.values())) > 1  # the texts tell the files apart
    return out


@dataclass
class KilledRun:
    files: list[Path]
    long: Path
    rows: list[dict]
    marker: dict
    killed: int
    restarted: set[int]


@pytest.fixture(scope="module")
def killed_run(whisper_dir, corpus, tmp_path_factory) -> KilledRun:
    """One shard through `asrd run`: the corpus three times and a 35 s recording, one row per
    engine call, through the fault engine around the transformers engine. The engine holds its
    second call; decoding stops a few engine batches ahead (backpressure), so most rows are not
    decoded yet when the run's only decode actor is killed, and the restarted actor must prepare
    them. One run serves both tests (Ray's start-up is most of it)."""
    folder = tmp_path_factory.mktemp("prepared")
    files = corpus_files(corpus) * 3
    long = make_long_silence(folder / "long.wav", 35)
    index = write_index(folder, files + [long])
    run_dir, state, log = folder / "run", folder / "faults", folder / "run.log"
    args = cli_args(index, run_dir, *engine_overrides(whisper_dir), "engine.kind=fault",
                    "faults.inner=transformers", f"faults.state_dir={state}",
                    "faults.block_after_calls=1", f"faults.release_file={state / 'release'}",
                    "pipeline.decode_actors=1", "pipeline.part_rows=1",
                    "pipeline.items_per_decode_task=1", "engine.batch_size=1")
    with running(args, log) as proc:

        def decode_actors() -> set[int]:  # this run's only: its Ray processes share its session
            out = subprocess.run(["pgrep", "-s", str(proc.pid), "-f", "ray::DecodeWorker"],
                                 capture_output=True, text=True).stdout
            return {int(pid) for pid in out.split()}

        wait_until(lambda: (state / "blocked").exists(), proc, "the engine blocked", log)
        (killed,) = decode_actors()
        os.kill(killed, signal.SIGKILL)
        wait_until(lambda: decode_actors() - {killed}, proc, "the actor's restart", log)
        restarted = decode_actors() - {killed}
        (state / "release").touch()
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    marker = assert_exactly_once(run_dir, len(files) + 1)
    return KilledRun(files, long, shard_rows(run_dir), marker, killed, restarted)


def test_shard_with_prepared_inputs_equals_direct_engine(killed_run, direct_texts):
    assert all(r["error"] is None for r in killed_run.rows)
    short = [r for r in killed_run.rows if r["path"] != str(killed_run.long)]
    assert len(short) == len(killed_run.files)
    assert [r["text"] for r in short] == [direct_texts[r["path"]] for r in short]
    # The 35 s recording went to the engine cut to its 30 s window, never whole.
    (long,) = [r for r in killed_run.rows if r["path"] == str(killed_run.long)]
    spans = [(s["start"], s["end"]) for s in long["segments"]]
    assert len(spans) == 2 and spans[0][0] == 0.0 and spans[-1][1] == pytest.approx(35.0)
    assert all(end - start <= MAX_SEGMENT_S for start, end in spans)


def test_restarted_decode_actor_still_prepares_inputs(killed_run):
    """Raw audio sent to an engine told to expect features would fail its rows."""
    assert killed_run.restarted and killed_run.killed not in killed_run.restarted
    assert killed_run.marker["ok"] == len(killed_run.files) + 1, killed_run.marker["errors"]
    assert killed_run.marker["errors"] == {}


def _refuse_to_load(why: str):
    raise ImportError(why)


class NeedsVllm:
    """Pickles anywhere, loads nowhere: a vLLM renderer sent to a process without vLLM."""

    def __reduce__(self):
        return _refuse_to_load, ("No module named 'vllm'",)


def test_a_preparer_that_cannot_load_gives_engine_input_error_rows(corpus):
    """Every item of the call becomes an error row that says why, not "decode worker died"."""
    import ray

    from asrd.runtime.decode_worker import DecodeWorker, decode_actor_config
    from asrd.runtime.records import WorkItem
    from hpc.ray_node import local_ray

    cfg = asrd_config.load(overrides=[])
    items = [WorkItem(i, p.name, str(p), language="en")
             for i, p in enumerate(corpus_files(corpus)[:2])]
    worker = DecodeWorker(*decode_actor_config(cfg), cfg.audio.pack.enabled, [])
    with local_ray(num_cpus=1, num_gpus=0):
        records, segments = worker.decode(items, [ray.put(NeedsVllm())])
    assert [r.row for r in records] == [0, 1] and segments == [[], []]
    for r in records:
        assert r.error.startswith("engine input error: cannot load the engine's input "
                                  "preparer: "), r.error
        assert "No module named 'vllm'" in r.error
    assert worker.decode(items, [])[0][0].error is None  # without a preparer: plain decode
