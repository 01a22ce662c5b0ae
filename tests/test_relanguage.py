"""Inputs rendered in the decode actors before the language-ID pass, re-made in the identified
language in the engine's process (asrd.engines.vllm_inputs: `Relanguager`, `splice`): token for
token the input rendered from scratch in that language, with the prepared audio features kept
(nothing extracted again). Needs vLLM's Python code (skipped where it does not import, as in
tests/test_vllm_generic.py): Whisper on asrd's prompts and on its vLLM class's, Qwen2-Audio on
asrd's chat, and the generic transcription classes of Voxtral and Gemma 3n."""

from __future__ import annotations

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
    whisper_renderer, whisper = made("whisper")
    with pytest.raises(ValueError, match="decoder prompt"):
        whisper.relanguage(whisper_renderer.prepare(np.zeros(16000, np.float32), "de"), "fr",
                           "es")
