"""Inputs rendered in the decode actors before the language-ID pass, re-made in the identified
language in the engine's process (asrd.engines.vllm_inputs: `Relanguager`, `splice`): token for
token the input rendered from scratch in that language, with the prepared audio features kept
(nothing extracted again). Needs vLLM's Python code (skipped where it does not import, as in
tests/test_vllm_generic.py): Whisper on asrd's prompts and on its vLLM class's, Qwen2-Audio on
asrd's chat, and the generic transcription classes of Voxtral and Gemma 3n."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asrd.engines.vllm_engine import model_formats
from asrd.engines.vllm_inputs import PromptSpec
from asrd.engines.vllm_transcription import TranscriptionSpec
from asrd.testing import speech_models, tiny_models

CASES = {  # name: (folder builder, the prompts' spec with English as the config's language)
    "whisper": (lambda d: tiny_models.build_whisper(d, weights=False),
                PromptSpec("whisper", "transcribe", "", None, "en", "cpu")),
    "whisper-no-language": (lambda d: tiny_models.build_whisper(d, weights=False),
                            PromptSpec("whisper", "transcribe", "", None, None, "cpu")),
    "whisper-base-no-language": (
        lambda d: tiny_models.build_whisper(d, tiny_models.WHISPER_BASE, weights=False),
        PromptSpec("whisper", "transcribe", "", None, None, "cpu")),
    "whisper-class": (lambda d: tiny_models.build_whisper(d, weights=False),
                      TranscriptionSpec("transcribe", "en", "")),
    "qwen2-audio": (lambda d: tiny_models.build_qwen2_audio(d, weights=False),
                    PromptSpec("qwen2_audio", "transcribe", "Transcribe the audio.", None, "en",
                               "cpu")),
    "voxtral": (speech_models.build_voxtral, TranscriptionSpec("transcribe", "en", "")),
    "gemma3n": (speech_models.build_gemma3n, TranscriptionSpec("transcribe", "en", "")),
}


def _vllm_config(model_dir: Path):
    pytest.importorskip("vllm", reason="vLLM is not installed here")
    from vllm.config import DeviceConfig, ModelConfig, VllmConfig

    model = ModelConfig(model=str(model_dir), tokenizer=str(model_dir), mm_processor_cache_gb=0,
                        limit_mm_per_prompt={"audio": 1}, **model_formats(model_dir))
    return VllmConfig(model_config=model, device_config=DeviceConfig(device="cpu"))


def _tokens(engine_input: dict[str, Any]) -> dict[str, Any]:
    """What a rendered input says besides its audio features: every prompt's tokens and text,
    and where the audio's placeholders lie."""
    parts = ({"encoder": engine_input["encoder_prompt"], "decoder": engine_input["decoder_prompt"]}
             if engine_input["type"] == "enc_dec" else {"prompt": engine_input})
    return {name: {"ids": list(p["prompt_token_ids"]), "text": p.get("prompt"),
                   "audio": [(r.offset, r.length, None if r.is_embed is None
                              else r.is_embed.tolist())
                             for r in p.get("mm_placeholders", {}).get("audio", [])]}
            for name, p in parts.items()}


def _audio_part(engine_input: dict[str, Any]) -> Any:
    return (engine_input["decoder_prompt"] if engine_input["type"] == "enc_dec"
            else engine_input)["mm_kwargs"]


def _features(engine_input: dict[str, Any]) -> Any:
    """The log-mel features of a rendered Whisper input."""
    return _audio_part(engine_input)["audio"][0]["input_features"].data


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Each case's renderer (a decode actor's) and relanguager (the engine's), built once."""
    pytest.importorskip("vllm", reason="vLLM is not installed here")
    from vllm.renderers import renderer_from_config

    from asrd.engines.vllm_inputs import InputRenderer, Relanguager, prompt_maker

    root, folders, out = tmp_path_factory.mktemp("relanguage"), {}, {}

    def get(name: str):
        if name not in out:
            build, spec = CASES[name]
            if build not in folders:
                folders[build] = build(root / name)
            vllm_config = _vllm_config(folders[build])
            renderer = renderer_from_config(vllm_config)
            prompts = prompt_maker(spec, renderer.get_tokenizer(), vllm_config.model_config)
            out[name] = (InputRenderer(vllm_config, spec),
                         Relanguager(renderer, vllm_config.model_config, prompts))
        return out[name]

    get.folders = lambda: {name: folders[CASES[name][0]] for name in out}

    return get


@pytest.mark.parametrize("name", list(CASES))
def test_the_swapped_prompt_is_the_one_rendered_for_that_language(made, name):
    renderer, relanguager = made(name)
    audio = np.random.default_rng(0).normal(0, 0.1, 7 * 16000).astype(np.float32)
    prepared = renderer.prepare(audio, None)  # the decode actor: the config's language
    assert relanguager.splices()
    for language in ("de", "fr"):
        swapped = relanguager.relanguage(prepared, None, language)
        fresh = renderer.prepare(audio, language)
        assert _tokens(swapped) == _tokens(fresh), language
        assert _tokens(swapped) != _tokens(prepared)  # the language did change
        assert _audio_part(swapped) is _audio_part(prepared)  # the features are the prepared
    german = renderer.prepare(audio, "de")  # an input in the index's language, re-made
    assert _tokens(relanguager.relanguage(german, "de", "fr")) == _tokens(
        renderer.prepare(audio, "fr"))


def test_an_input_not_in_the_language_it_is_said_to_be_in_is_refused(made):
    renderer, relanguager = made("voxtral")
    prepared = renderer.prepare(np.zeros(3 * 16000, np.float32), "de")
    with pytest.raises(ValueError, match="text around its audio"):
        relanguager.relanguage(prepared, "fr", "es")
    (audio,) = prepared["mm_placeholders"]["audio"]
    chunked = {**prepared, "mm_placeholders": {"audio": [audio, audio]}}  # a model's chunks
    with pytest.raises(ValueError, match="2 audio items"):
        relanguager.relanguage(chunked, "de", "es")
    whisper_renderer, whisper = made("whisper")
    with pytest.raises(ValueError, match="decoder prompt"):
        whisper.relanguage(whisper_renderer.prepare(np.zeros(16000, np.float32), "de"), "fr",
                           "es")


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[str, np.ndarray]:
    """A German and a Spanish clip (espeak-ng)."""
    import json

    import soundfile as sf

    from asrd.speech_samples import make_language_set

    manifest = make_language_set(tmp_path_factory.mktemp("speech"), ("de", "es"), per_language=1)
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    return {r["spoken"]: sf.read(manifest.parent / r["path"], dtype="float32")[0] for r in rows}


def test_the_pass_routes_inputs_the_decode_actors_prepared(made, speech):
    """The pass's steps on inputs prepared as a decode actor prepares them for it: the
    identifier reads the audio carried beside the input (the real faster-whisper Whisper-base),
    the engine's input is re-made in the identified language, token for token the one rendered
    for it from scratch; a segment whose language the index gives keeps its input; an identifier
    of the engine's own model takes the prepared features with its own prompt."""
    from asrd import config as config_mod
    from asrd.engines.base import Segment
    from asrd.engines.language_id import (Routing, WhisperDetector, engine_segment,
                                          identifier_segment)
    import torch

    from asrd.engines.vllm_inputs import RoutedPreparer

    renderer, relanguager = made("whisper")
    # pickled, as Ray sends it to the decode actors (which build vLLM's renderer there)
    preparer = pickle.loads(pickle.dumps(RoutedPreparer(renderer, None, carry_audio=True)))
    segments = [Segment(None, None, preparer.prepare(speech["de"], None), "de"),
                Segment(None, None, preparer.prepare(speech["es"], None), "es"),
                Segment(None, "en", preparer.prepare(speech["de"], "en"), "forced")]
    assert all(s.prepared.identifier is None for s in segments)
    with pytest.raises(ValueError, match="no packing"):  # a window is in one language
        preparer.prepare(speech["de"], None, timestamps=True)
    cfg = config_mod.load(None, ["run.index=x", "language_id.enabled=true"])
    detector = WhisperDetector.load(str(cfg.language_id.model), "int8", 1)
    try:
        given = [identifier_segment(s, relanguager, None) for s in segments]
        assert all(g.prepared is None and g.audio is not None for g in given)
        spoken = detector.identify(given)
    finally:
        detector.close()
    assert [s.language for s in spoken] == ["de", "es", "de"]
    routing = Routing(0.3, "en")
    routed = [None if s.language else routing.route(f) for s, f in zip(segments, spoken)]
    assert routed == ["de", "es", None]
    out = [engine_segment(s, r, "en", relanguager) for s, r in zip(segments, routed)]
    assert [o.language for o in out] == ["de", "es", "en"]
    assert _tokens(out[0].prepared) == _tokens(renderer.prepare(speech["de"], "de"))
    assert _tokens(out[1].prepared) == _tokens(renderer.prepare(speech["es"], "es"))
    assert out[2].prepared is segments[2].prepared.engine  # the index's language stands

    # an identifier whose features are the engine's (Whisper-base's beside this one's):
    # the prepared features with its own prompt, equal to its input rendered from scratch
    identifier_renderer, identifier = made("whisper-base-no-language")
    shared = identifier_segment(segments[0], relanguager, identifier)
    fresh = identifier_renderer.prepare(speech["de"], None)
    assert _tokens(shared.prepared) == _tokens(fresh)
    assert _audio_part(shared.prepared) is _audio_part(segments[0].prepared.engine)
    assert torch.equal(_features(shared.prepared), _features(fresh))

    # an identifier of another model: its own input, rendered in the decode actor beside
    own = RoutedPreparer(made("voxtral")[0], identifier_renderer, carry_audio=False)
    routed = own.prepare(speech["es"], None)
    assert routed.audio is None and _tokens(routed.identifier) == _tokens(
        identifier_renderer.prepare(speech["es"], None))
    given = identifier_segment(Segment(None, None, routed, "es"), made("voxtral")[1], None)
    assert given.prepared is routed.identifier and given.language is None


def test_whispers_with_the_same_features_share_them_others_do_not(made, tmp_path):
    """Whether the identifier takes the engine's prepared features (vllm_engine.shares_features):
    the same folder, or Whispers of one feature extractor and encoder length (tiny and base);
    not a Whisper of 128 log-mel bins (large-v3's), nor two folders of other architectures."""
    from asrd.engines.vllm_engine import shares_features

    for name in ("whisper", "whisper-base-no-language", "voxtral", "gemma3n"):
        made(name)
    folders = made.folders()
    tiny, base = folders["whisper"], folders["whisper-base-no-language"]
    assert shares_features(tiny, tiny) and shares_features(tiny, base)
    mels = tiny_models.build_whisper(tmp_path / "128", tiny_models.WhisperSize(num_mel_bins=128),
                                     weights=False)
    assert not shares_features(base, mels)
    assert not shares_features(folders["voxtral"], folders["gemma3n"])
    assert shares_features(folders["voxtral"], folders["voxtral"])
