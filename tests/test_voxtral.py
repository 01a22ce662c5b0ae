"""Voxtral in Mistral's own layout (params.json, tekken.json): asrd reads its architecture and
tells vLLM the formats; the offline folder of `asrd.testing.speech_models` loads in
mistral_common; and, where vLLM imports (not in the CPU install: those checks are skipped there),
Voxtral's vLLM class prompts asrd's audio and vLLM's renderer makes its engine input. The
offline FireRedLID folder (language ID) is checked as far as the CPU allows: vLLM's config, its
tokenizer and vLLM's feature extractor (its processor needs torchvision, which the CPU install
lacks). The engines themselves run on a GPU (tests/test_vllm_engine.py, bench/gpu/run_all.sh
models)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from asrd import config as config_mod
from asrd.engines.base import EngineUnavailable
from asrd.engines.vllm_engine import VllmEngine, architectures, model_formats, model_kind
from asrd.testing import speech_models

ENCODER = {"audio_encoding_args": {"sampling_rate": 16000}, "dim": 1280}


def _mistral_folder(tmp_path, params: dict, name: str = "m"):
    d = tmp_path / name
    d.mkdir()
    (d / "params.json").write_text(json.dumps(params))
    (d / "tekken.json").write_text("{}")  # only its presence is read here
    return d


def _audio_params(**encoder) -> dict:
    return {"dim": 3072, "multimodal": {"whisper_model_args": {
        "encoder_args": {**ENCODER, **encoder}, "downsample_args": {"downsample_factor": 4}}}}


@pytest.fixture(scope="module")
def voxtral(tmp_path_factory):
    pytest.importorskip("mistral_common", reason="mistral_common (installed with vLLM) is not here")
    return speech_models.build_voxtral(tmp_path_factory.mktemp("voxtral") / "voxtral")


def test_the_architecture_is_read_from_params_json(tmp_path):
    folder = _mistral_folder(tmp_path, _audio_params())
    assert not (folder / "config.json").exists()
    assert architectures(folder) == ["VoxtralForConditionalGeneration"]
    assert model_kind(folder) == "transcription"
    assert model_formats(folder) == {"config_format": "mistral", "tokenizer_mode": "mistral"}
    realtime = _mistral_folder(tmp_path, _audio_params(causal=True), "rt")
    assert architectures(realtime) == ["VoxtralRealtimeGeneration"]
    engine = config_mod.load(None, ["engine.kind=vllm", f"engine.model={folder}"]).engine
    assert not VllmEngine.packs(engine)  # packing is Whisper's alone


def test_params_json_wins_over_an_hf_config_json(tmp_path):
    """The published checkpoint carries both; vLLM reads params.json, and so does asrd."""
    folder = _mistral_folder(tmp_path, _audio_params())
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert architectures(folder) == ["VoxtralForConditionalGeneration"]


def test_a_mistral_text_model_is_refused_naming_params_json(tmp_path):
    folder = _mistral_folder(tmp_path, {"dim": 4096, "n_layers": 32})
    with pytest.raises(EngineUnavailable, match=r"params.json: architectures "
                                                r"\['MistralForCausalLM'\] cannot be transcribed"):
        model_kind(folder)


def test_an_hf_folder_keeps_vllms_own_detection(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["GemmaForCausalLM"]}))
    (d / "params.json").write_text("{}")  # params.json alone (no tekken.json) is not Mistral's
    assert model_formats(d) == {} and architectures(d) == ["GemmaForCausalLM"]


def test_the_builder_without_mistral_common_says_so_in_one_line(tmp_path):
    code = ("import sys; sys.modules['mistral_common'] = None; "  # as if it were not installed
            "from asrd.testing.speech_models import main; main(['voxtral', sys.argv[1]])")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "v")], capture_output=True,
                          text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("python -m asrd.testing.speech_models: error:")
    assert "mistral_common" in lines[0] and not (tmp_path / "v").exists()


def test_the_folder_has_voxtral_mini_3bs_size_and_mistral_commons_tokenizer(voxtral):
    from mistral_common.protocol.transcription.request import TranscriptionRequest
    from mistral_common.tokens.tokenizers.audio import Audio
    from mistral_common.tokens.tokenizers.base import SpecialTokens
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    params = json.loads((voxtral / "params.json").read_text())
    assert (params["dim"], params["n_layers"], params["vocab_size"]) == (3072, 30, 131072)
    assert architectures(voxtral) == ["VoxtralForConditionalGeneration"]
    tok = MistralTokenizer.from_file(str(voxtral / "tekken.json"))
    inner = tok.instruct_tokenizer.tokenizer
    assert inner.n_words == params["vocab_size"]
    audio_config = tok.instruct_tokenizer.audio_encoder.audio_config
    assert (audio_config.sampling_rate, audio_config.frame_rate) == (16000, 12.5)
    assert inner.decode(inner.encode("the quick brown fox", False, False)) == "the quick brown fox"
    ids = {t: inner.get_special_token(t) for t in (SpecialTokens.begin_audio, SpecialTokens.audio,
                                                  SpecialTokens.transcribe, SpecialTokens.end_inst)}
    clip = Audio(np.zeros(5 * 16000, np.float32), 16000, format="wav")
    encoded = tok.instruct_tokenizer.encode_transcription(TranscriptionRequest(
        model="voxtral", audio=clip.to_base64("wav"), language="de"))
    tokens = encoded.tokens
    # [BOS][INST][BEGIN_AUDIO], the clip padded to 30 s at 12.5 tokens/s, [/INST]lang:de[TRANSCRIBE]
    assert tokens[2] == ids[SpecialTokens.begin_audio]
    assert tokens.count(ids[SpecialTokens.audio]) == 375
    assert tokens[-1] == ids[SpecialTokens.transcribe]
    end = tokens.index(ids[SpecialTokens.end_inst])
    assert inner.decode(tokens[end + 1:-1]) == "lang:de"


# --- with vLLM importable (a GPU node, or a CPU install of vLLM's Python packages) ----------------

@pytest.fixture(scope="module")
def vllm_config(voxtral):
    pytest.importorskip("vllm", reason="vLLM is not installed here")
    from vllm.config import DeviceConfig, ModelConfig, VllmConfig

    # the formats asrd's engine passes (vLLM's own detection needs consolidated weights)
    model = ModelConfig(model=str(voxtral), tokenizer=str(voxtral), mm_processor_cache_gb=0,
                        limit_mm_per_prompt={"audio": 1}, **model_formats(voxtral))
    return VllmConfig(model_config=model, device_config=DeviceConfig(device="cpu"))


def test_vllm_reads_the_folder_as_voxtral_mini_3b(vllm_config):
    model = vllm_config.model_config
    assert model.architectures == ["VoxtralForConditionalGeneration"]
    assert model.hf_config.audio_config.d_model == 1280
    assert model.hf_config.audio_config.encoder_layers == 32
    assert model.hf_config.text_config.num_hidden_layers == 30


def test_voxtrals_class_prompts_and_renders_asrd_audio(vllm_config):
    from vllm.tokenizers import cached_tokenizer_from_config

    from asrd.engines.vllm_inputs import InputRenderer, prompt_maker
    from asrd.engines.vllm_transcription import TranscriptionSpec

    spec = TranscriptionSpec("transcribe", "en", "")
    prompts = prompt_maker(spec, None, vllm_config.model_config)
    assert prompts.sample_rate == 16000 and prompts.max_clip_s == 30
    audio = np.random.default_rng(0).normal(0, 0.1, 5 * 16000).astype(np.float32)
    prompt = prompts.prompt(audio, "de", "row-1")
    tokenizer = cached_tokenizer_from_config(vllm_config.model_config)
    assert "lang:de" in tokenizer.decode(prompt["prompt_token_ids"][-4:])  # the row's language
    assert prompt["multi_modal_uuids"] == {"audio": ["row-1-0"]}
    rendered = InputRenderer(vllm_config, spec).prepare(audio, None)
    (placeholder,) = rendered["mm_placeholders"]["audio"]
    assert placeholder.length == 375  # 30 s at 12.5 audio tokens per second
    with pytest.raises(ValueError, match="longer than the model's 30 s clip"):
        prompts.check(np.zeros(31 * 16000, np.float32))
    said = prompts.text("  hello there ")
    assert (said.text, said.language) == ("hello there", None)


# --- FireRedLID, the language-ID model ------------------------------------------------------------

@pytest.fixture(scope="module")
def fireredlid(tmp_path_factory):
    pytest.importorskip("vllm", reason="vLLM is not installed here")
    return speech_models.build_fireredlid(tmp_path_factory.mktemp("lid") / "fireredlid")


def test_the_fireredlid_folder_is_read_by_vllm_and_asrd(fireredlid):
    from transformers import AutoTokenizer
    from vllm.config import ModelConfig
    from vllm.model_executor.models.fireredlid import FireRedLIDForConditionalGeneration

    model = ModelConfig(model=str(fireredlid), tokenizer=str(fireredlid))
    assert model.architectures == ["FireRedLIDForConditionalGeneration"]
    assert model.is_encoder_decoder and model.hf_config.d_model == 1280
    assert model_kind(fireredlid) == "transcription" and model_formats(fireredlid) == {}
    tok = AutoTokenizer.from_pretrained(fireredlid)
    assert len(tok) == model.hf_config.vocab_size == 120
    # the class's decoder prompt is "<sos>": it must be the one token config.json starts with
    assert tok("<sos>", add_special_tokens=False)["input_ids"] == [
        model.hf_config.decoder_start_token_id]
    for code in FireRedLIDForConditionalGeneration.supported_languages:  # each label one token
        (label,) = tok(code, add_special_tokens=False)["input_ids"]
        assert tok.decode([label]) == code


def test_vllms_fireredlid_features_of_the_folder(fireredlid):
    pytest.importorskip("kaldi_native_fbank", reason="vLLM's FireRedLID features need it")
    from vllm.transformers_utils.processors.fireredlid import FireRedLIDFeatureExtractor

    settings = json.loads((fireredlid / "preprocessor_config.json").read_text())
    assert settings["feature_extractor_type"] == "FireRedLIDFeatureExtractor"
    extractor = FireRedLIDFeatureExtractor(**{k: v for k, v in settings.items()
                                              if k not in ("feature_extractor_type",
                                                           "processor_class")})
    audio = np.random.default_rng(1).normal(0, 0.1, 5 * 16000).astype(np.float32)
    out = extractor([audio], sampling_rate=16000)
    assert tuple(out["input_features"].shape) == (1, 498, 80)  # 10 ms frames of 25 ms
    assert out["fake_token_lengths"].tolist() == [125]  # the encoder's 4x subsampling


# --- GLM-ASR --------------------------------------------------------------------------------------

def test_glm_asrs_class_prompts_and_renders_asrd_audio(tmp_path):
    pytest.importorskip("vllm", reason="vLLM is not installed here")
    from vllm.config import DeviceConfig, ModelConfig, VllmConfig

    from asrd.engines.vllm_inputs import InputRenderer, prompt_maker
    from asrd.engines.vllm_transcription import TranscriptionSpec

    folder = speech_models.build_glm_asr(tmp_path / "glm-asr")
    model = ModelConfig(model=str(folder), tokenizer=str(folder), mm_processor_cache_gb=0,
                        limit_mm_per_prompt={"audio": 1})
    vllm_config = VllmConfig(model_config=model, device_config=DeviceConfig(device="cpu"))
    assert model.architectures == ["GlmAsrForConditionalGeneration"]
    assert model_kind(folder) == "transcription"
    spec = TranscriptionSpec("transcribe", "en", "")
    prompts = prompt_maker(spec, None, model)
    assert prompts.sample_rate == 16000 and prompts.max_clip_s == 655  # GlmAsrProcessor's limit
    audio = np.random.default_rng(2).normal(0, 0.1, 5 * 16000).astype(np.float32)
    rendered = InputRenderer(vllm_config, spec).prepare(audio, None)
    (placeholder,) = rendered["mm_placeholders"]["audio"]
    assert placeholder.length == 62  # 5 s of 10 ms frames, halved by the encoder, merged by 4
    audio_id = json.loads((folder / "config.json").read_text())["audio_token_id"]
    ids = rendered["prompt_token_ids"]
    assert ids[placeholder.offset:placeholder.offset + placeholder.length] == [audio_id] * 62
