"""The transformers engine on CPU, on real speech: the real Whisper-base (converted from the PyPI
package, asrd.testing.real_whisper) and a tiny random Qwen2-Audio of the real architecture
(asrd.testing.tiny_models)."""

from __future__ import annotations

import pickle
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from asrd import config as asrd_config
from asrd.demo import word_error_rate
from asrd.engines import EngineUnavailable, Segment, build_engine
from asrd.engines.prompts import audio_chat_messages, instruction_text, whisper_decoder_prompt
from asrd.testing.tiny_models import build_qwen2_audio, build_whisper

pytest.importorskip("transformers")

PHRASES = ["hello world", "the quick brown fox jumps over the lazy dog",
           "seven eight nine ten", "please call stella"]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> list[np.ndarray]:
    """espeak-ng speech, read with soundfile and resampled to 16 kHz with soxr."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    out = []
    for i, phrase in enumerate(PHRASES):
        wav = tmp_path_factory.mktemp("speech") / f"{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), phrase], check=True)
        audio, rate = sf.read(wav, dtype="float32")
        out.append(soxr.resample(audio, rate, 16000).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def whisper_dir(real_whisper_dir) -> Path:
    """The real Whisper-base (converted from the PyPI package): real words to assert on."""
    return real_whisper_dir


@pytest.fixture(scope="module")
def qwen2_audio_dir(tmp_path_factory) -> Path:
    return build_qwen2_audio(tmp_path_factory.mktemp("tiny-qwen2-audio"))


def engine_cfg(model: Path | str, **overrides):
    items = ["engine.kind=transformers", f"engine.model={model}", "engine.compute_type=int8",
             "engine.max_new_tokens=8"] + [f"engine.{k}={v}" for k, v in overrides.items()]
    return asrd_config.load(overrides=items).engine


@pytest.fixture(scope="module")
def whisper_engine(whisper_dir):
    engine = build_engine(engine_cfg(whisper_dir, batch_size=8, max_new_tokens=32))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def qwen2_audio_engine(qwen2_audio_dir):
    engine = build_engine(engine_cfg(qwen2_audio_dir, batch_size=8,
                                     system_prompt="'You transcribe speech.'"))
    yield engine
    engine.close()


def check_batch_equals_one_by_one(engine, segments: list[Segment]) -> list[str]:
    batch = engine.transcribe(segments)
    assert len(batch) == len(segments)
    assert all(isinstance(t, str) for t in batch)
    one_by_one = [engine.transcribe([seg])[0] for seg in segments]
    assert batch == one_by_one
    return batch


def test_whisper_one_text_per_segment_in_order(whisper_engine, whisper_dir, speech):
    segments = [Segment(a) for a in speech]
    texts = check_batch_equals_one_by_one(whisper_engine, segments)
    # real words, each in its own row ("seven eight nine ten" comes back as "78910")
    assert word_error_rate(PHRASES, texts) < 0.5, texts
    assert whisper_engine.transcribe(segments[::-1]) == texts[::-1]
    assert whisper_engine.name == str(whisper_dir)  # the model recorded in each row


def test_whisper_groups_languages_and_keeps_order(whisper_engine, speech):
    segments = [Segment(speech[0], "en"), Segment(speech[1], "de"), Segment(speech[2], None),
                Segment(speech[3], "de")]
    check_batch_equals_one_by_one(whisper_engine, segments)


def test_batch_size_splits_calls(whisper_dir, speech):
    engine = build_engine(engine_cfg(whisper_dir, batch_size=3))
    segments = [Segment(a) for a in speech]
    try:
        assert engine.transcribe(segments) == [engine.transcribe([s])[0] for s in segments]
    finally:
        engine.close()


def test_whisper_prepared_features_give_the_same_texts(whisper_engine, speech):
    """What the decode actors send: features from the engine's preparer, after a pickle round
    trip (it travels to other processes), decode exactly as raw audio, alone or mixed with it."""
    preparer = pickle.loads(pickle.dumps(whisper_engine.input_preparer()))
    languages = ["fr", None, "fr", "fr"]  # None: the config's "en"
    raw = [Segment(a, lang) for a, lang in zip(speech, languages)]
    prepared = [Segment(None, lang, preparer.prepare(a, lang))
                for a, lang in zip(speech, languages)]
    assert all(p.prepared.shape == (80, 3000) and p.prepared.dtype == np.float32
               for p in prepared)
    texts = whisper_engine.transcribe(raw)
    assert len({texts[0], texts[2], texts[3]}) == 3  # a misplaced "fr" input would show
    assert whisper_engine.transcribe(prepared) == texts
    # The "fr" call stacks prepared and freshly computed features.
    mixed = [prepared[0], raw[1], raw[2], prepared[3]]
    assert whisper_engine.transcribe(mixed) == texts


def test_whisper_preparer_refuses_what_the_engine_refuses(whisper_engine):
    preparer = whisper_engine.input_preparer()
    with pytest.raises(ValueError, match="longer than the model's 30 s window"):
        preparer.prepare(np.zeros(31 * 16000, np.float32), "en")
    with pytest.raises(ValueError, match="empty"):
        preparer.prepare(np.zeros(0, np.float32), None)
    with pytest.raises(ValueError, match="mono"):
        preparer.prepare(np.zeros((2, 16000), np.float32), None)


def test_qwen2_audio_batch_with_left_padding(qwen2_audio_engine, speech):
    # Different languages give prompts of different lengths, so the batch is left-padded.
    segments = [Segment(speech[0], "en"), Segment(speech[1], "fr"), Segment(speech[2]),
                Segment(speech[3], "de")]
    texts = check_batch_equals_one_by_one(qwen2_audio_engine, segments)
    assert len(set(texts)) > 1
    for text in texts:  # the prompt is cut: none of its words come back
        assert "assistant" not in text and "transcribe" not in text.lower()
    # Its processor makes features and prompt together: the decode actors send raw audio.
    assert qwen2_audio_engine.input_preparer() is None


@pytest.mark.parametrize("engine", ["whisper_engine", "qwen2_audio_engine"])
def test_hypotheses_carry_the_average_token_log_probability(engine, speech, request):
    """From generate's scores, up to each text's end token: a row's value does not depend on
    the padding its batch neighbours add."""
    engine = request.getfixturevalue(engine)
    segments = [Segment(speech[0], "en"), Segment(speech[1], "en")]
    hyps = engine.hypotheses(segments)
    assert [h.text for h in hyps] == engine.transcribe(segments)
    assert all(h.avg_logprob is not None and h.avg_logprob < 0 for h in hyps)
    alone = engine.hypotheses([segments[0]])[0]
    assert alone.avg_logprob == pytest.approx(hyps[0].avg_logprob, abs=1e-3)


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(EngineUnavailable, match="does not exist.*nothing is downloaded"):
        build_engine(engine_cfg(tmp_path / "no-such-model"))
    with pytest.raises(EngineUnavailable, match="has no config.json"):
        build_engine(engine_cfg(tmp_path))


def test_unsupported_compute_type(whisper_dir):
    with pytest.raises(asrd_config.ConfigError, match="engine.compute_type='int4'"):
        build_engine(engine_cfg(whisper_dir, compute_type="int4"))


def test_bad_segments_are_refused_not_truncated(whisper_engine):
    with pytest.raises(ValueError, match="longer than the model's 30 s window"):
        whisper_engine.transcribe([Segment(np.zeros(31 * 16000, np.float32))])
    with pytest.raises(ValueError, match="empty"):
        whisper_engine.transcribe([Segment(np.zeros(0, np.float32))])


def test_prompts():
    assert instruction_text("Transcribe.", None) == "Transcribe."
    assert instruction_text("Transcribe.", "de") == "Transcribe. The speech is in German."
    assert instruction_text("Transcribe the {language} speech.", "en") == \
        "Transcribe the English speech."
    assert instruction_text("Transcribe this speech in {language}.", None) == \
        "Transcribe this speech in the spoken language."
    messages = audio_chat_messages("Transcribe.", "en", "Be exact.")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"][0]["type"] == "audio" and "audio" in messages[1]["content"][0]
    assert audio_chat_messages("Transcribe.", None)[0]["role"] == "user"
    assert whisper_decoder_prompt("en") == \
        "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"
    assert whisper_decoder_prompt(None, "translate") == \
        "<|startoftranscript|><|translate|><|notimestamps|>"
    # no language: Whisper writes the language it hears right after <|startoftranscript|>
    assert whisper_decoder_prompt(None) == whisper_decoder_prompt(None, timestamps=True) == \
        "<|startoftranscript|>"


@pytest.mark.gpu
@pytest.mark.parametrize("build", [build_whisper, build_qwen2_audio])
def test_engine_on_gpu_in_bfloat16(build, speech, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    engine = build_engine(engine_cfg(build(tmp_path / "model"), device="cuda",
                                     compute_type="bfloat16"))
    try:
        texts = engine.transcribe([Segment(a, "en") for a in speech])
        assert len(texts) == len(speech) and all(isinstance(t, str) for t in texts)
    finally:
        engine.close()
