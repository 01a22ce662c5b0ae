"""Engine inputs prepared in the decode actors (Whisper's log-mel features from the transformers
engine's `input_preparer`), end to end on real Ray with a tiny random Whisper (offline)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from asrd import config as asrd_config
from asrd.audio import decode, split_points
from asrd.engines import Segment, build_engine
from asrd.index import build_index
from asrd.tiny_models import build_whisper
from tests.bad_audio import make_long_silence
from tests.test_reliability import assert_exactly_once, parts, run_args, wait_for

pytest.importorskip("transformers")

MAX_SEGMENT_S = 40  # above the model's 30 s window, so that the preparer sees a too-long segment


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory) -> Path:
    return build_whisper(tmp_path_factory.mktemp("tiny-whisper"))


def engine_overrides(whisper_dir: Path) -> list[str]:
    return ["engine.kind=transformers", f"engine.model={whisper_dir}", "engine.compute_type=int8",
            "engine.max_new_tokens=8", f"audio.max_segment_s={MAX_SEGMENT_S}"]


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
    engine call; its only decode actor is killed when the first row is committed. By then most
    rows are not decoded yet (backpressure holds decoding a few engine batches ahead), so the
    restarted actor must prepare them. One run serves both tests (Ray's start-up is most of it)."""
    folder = tmp_path_factory.mktemp("prepared")
    files = corpus_files(corpus) * 3
    long = make_long_silence(folder / "long.wav", 35)
    index = write_index(folder, files + [long])
    run_dir = folder / "run"
    proc = subprocess.Popen(run_args(index, run_dir, *engine_overrides(whisper_dir),
                                     "pipeline.decode_actors=1"),
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def decode_actors() -> set[int]:  # this run's only: its Ray processes share its session
        out = subprocess.run(["pgrep", "-s", str(proc.pid), "-f", "ray::DecodeWorker"],
                             capture_output=True, text=True).stdout
        return {int(pid) for pid in out.split()}

    try:
        wait_for(lambda: len(parts(run_dir)) >= 1, proc)
        (killed,) = decode_actors()
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: decode_actors() - {killed}, proc)  # Ray restarts it
        restarted = decode_actors() - {killed}
        assert proc.wait(timeout=240) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    marker = assert_exactly_once(run_dir, len(files) + 1)
    rows = pq.read_table(run_dir / "shards" / "shard-000000.parquet").to_pylist()
    return KilledRun(files, long, rows, marker, killed, restarted)


def test_shard_with_prepared_inputs_equals_direct_engine(killed_run, direct_texts):
    ok = [r for r in killed_run.rows if r["error"] is None]
    assert len(ok) == len(killed_run.files)
    assert [r["text"] for r in ok] == [direct_texts[r["path"]] for r in ok]
    # The preparer refused the too-long segment in the decode actor: the engine never saw it
    # (there it would have been an "engine error" after retries).
    (err,) = [r["error"] for r in killed_run.rows if r["path"] == str(killed_run.long)]
    assert err == ("engine input error: ValueError: 35.00 s is longer than the model's 30 s "
                   "window (segment it first)")


def test_restarted_decode_actor_still_prepares_inputs(killed_run):
    """Raw audio sent to an engine told to expect features would fail its rows."""
    assert killed_run.restarted and killed_run.killed not in killed_run.restarted
    assert killed_run.marker["ok"] == len(killed_run.files), killed_run.marker["errors"]
    assert killed_run.marker["errors"] == {"engine input error": 1}


def _refuse_to_load(why: str):
    raise ImportError(why)


class NeedsVllm:
    """Pickles anywhere, loads nowhere: a vLLM renderer sent to a process without vLLM."""

    def __reduce__(self):
        return _refuse_to_load, ("No module named 'vllm'",)


def test_a_preparer_that_cannot_load_gives_engine_input_error_rows(corpus):
    """Every item of the call becomes an error row that says why, not "decode worker died"."""
    import ray
    from omegaconf import OmegaConf

    from asrd.pipeline import DecodeWorker
    from hpc.ray_node import local_ray

    cfg = asrd_config.load(overrides=[])
    items = [{"row": i, "id": p.name, "path": str(p), "audio": None, "language": "en"}
             for i, p in enumerate(corpus_files(corpus)[:2])]
    worker = DecodeWorker(OmegaConf.to_container(cfg.audio, resolve=True),
                          OmegaConf.to_container(cfg.store, resolve=True), [])
    with local_ray(num_cpus=1, num_gpus=0):
        metas, segments = worker.decode(items, [ray.put(NeedsVllm())])
    assert [m["row"] for m in metas] == [0, 1] and segments == [[], []]
    for m in metas:
        assert m["error"].startswith("engine input error: cannot load the engine's input "
                                     "preparer: "), m["error"]
        assert "No module named 'vllm'" in m["error"]
    assert worker.decode(items, [])[0][0]["error"] is None  # without a preparer: plain decode
