"""The real Whisper-base converted from CTranslate2 to a Transformers folder: a faithful,
deterministic copy (same tokens as faster-whisper from the same features), whose timestamps
split packed windows back to their clips on the transformers engine."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import soxr

from asrd import config as asrd_config
from asrd.audio.pack import Member, build_window
from asrd.demo import word_error_rate
from asrd.engines import PackedWindow, Segment, build_engine
from asrd.engines.faster_whisper_engine import bundled_model_dir
from asrd.testing.real_whisper import convert

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

# (voice, text): two voices, three sentences of different lengths
SPEECH = [("en", "the quick brown fox jumps over the lazy dog"),
          ("en-us", "pack my box with five dozen liquor jugs"),
          ("en", "open the door please")]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> list[np.ndarray]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    out = []
    for i, (voice, text) in enumerate(SPEECH):
        wav = tmp_path_factory.mktemp("speech") / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True)
        audio, rate = sf.read(wav, dtype="float32")
        out.append(soxr.resample(audio, rate, 16000).astype(np.float32))
    return out


def test_the_folder_is_complete_and_made_the_same_every_time(real_whisper_dir, tmp_path):
    again = convert(bundled_model_dir("whisper-base"), tmp_path / "again")
    names = sorted(p.name for p in real_whisper_dir.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        assert (real_whisper_dir / name).read_bytes() == (again / name).read_bytes(), name
    config = json.loads((real_whisper_dir / "config.json").read_text())
    assert config["architectures"] == ["WhisperForConditionalGeneration"]
    assert (config["vocab_size"], config["d_model"], config["encoder_layers"]) == (51865, 512, 6)
    generation = json.loads((real_whisper_dir / "generation_config.json").read_text())
    assert len(generation["lang_to_id"]) == 99 and generation["no_timestamps_token_id"] == 50363
    assert generation["alignment_heads"] and generation["suppress_tokens"]
    tok = transformers.WhisperTokenizer.from_pretrained(real_whisper_dir)
    assert len(tok) == 51865  # the 1,501 timestamp tokens added
    assert tok.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"]) == [50364, 51864]
    model = transformers.WhisperForConditionalGeneration.from_pretrained(real_whisper_dir)
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()


def test_same_tokens_as_faster_whisper_from_the_same_features(real_whisper_dir, speech):
    import ctranslate2
    from faster_whisper import WhisperModel

    fw = WhisperModel(str(bundled_model_dir("whisper-base")), device="cpu",
                      compute_type="float32", cpu_threads=1)
    hf = transformers.WhisperForConditionalGeneration.from_pretrained(
        real_whisper_dir, dtype=torch.float32).eval()
    prompt = [fw.hf_tokenizer.token_to_id(t) for t in
              ("<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>")]
    for audio in speech:
        features = fw.feature_extractor(audio)[:, :3000]
        features = np.pad(features, ((0, 0), (0, 3000 - features.shape[1])))[None]
        ct2 = fw.model.generate(ctranslate2.StorageView.from_array(features), [prompt],
                                beam_size=1, max_length=448, suppress_blank=True,
                                suppress_tokens=[-1])[0].sequences_ids[0]
        with torch.inference_mode():
            out = hf.generate(torch.from_numpy(features), language="en", task="transcribe")
        assert [t for t in out[0].tolist() if t < 50257] == ct2
        assert len(ct2) >= 4


def test_packed_windows_split_back_by_the_models_timestamps(real_whisper_dir, speech):
    """The transformers engine packs with real weights: each clip gets its own words back,
    the same as when it is transcribed alone, with a log-probability of its own."""
    cfg = asrd_config.load(overrides=["engine.kind=transformers", f"engine.model={real_whisper_dir}",
                                      "engine.compute_type=float32", "engine.max_new_tokens=96"])
    engine = build_engine(cfg.engine)
    try:
        assert type(engine).packs(cfg.engine)
        window, offsets = build_window(speech, 16000, 1.0)
        members = [Member(i, str(i), at, len(a) / 16000)
                   for i, (at, a) in enumerate(zip(offsets, speech))]
        preparer = engine.input_preparer()
        prepared = Segment(None, "en", preparer.prepare(window, "en", timestamps=True))
        (packed, again) = engine.hypotheses_windows(
            [PackedWindow(Segment(window, "en"), tuple(members)),
             PackedWindow(prepared, tuple(members))])
        assert packed == again  # features made in a decode actor decode the same
        alone = engine.hypotheses([Segment(a, "en") for a in speech])
        assert all(h is not None and h.avg_logprob is not None and h.avg_logprob < 0
                   for h in packed)
        references = [text for _, text in SPEECH]
        wer_packed = word_error_rate(references, [h.text for h in packed])
        wer_alone = word_error_rate(references, [h.text for h in alone])
        assert wer_packed <= wer_alone + 0.05, ([h.text for h in packed], [h.text for h in alone])
        # no word of one clip in another's row: each row is closest to its own reference
        for k, h in enumerate(packed):
            own = word_error_rate([references[k]], [h.text])
            assert all(own < word_error_rate([r], [h.text])
                       for j, r in enumerate(references) if j != k), h.text
    finally:
        engine.close()
