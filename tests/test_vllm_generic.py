"""The generic vLLM transcription path on the CPU: which architectures run on whose prompts, the
refusal of one vLLM cannot transcribe with, the offline model folders; and, where vLLM imports
(not in the CPU install: the prompt and render checks are skipped there), the prompts and engine
inputs the models' own vLLM classes make of asrd's audio. The engine itself runs on a GPU
(tests/test_vllm_engine.py, bench/gpu/run_all.sh models)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from asrd import config as config_mod
from asrd.engines.base import EngineUnavailable
from asrd.engines.vllm_engine import VllmEngine, model_kind
from asrd.engines.vllm_transcription import TRANSCRIPTION_ARCHITECTURES
from asrd.testing import speech_models, tiny_models


def _folder(tmp_path, arch: str):
    d = tmp_path / arch
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": [arch]}))
    return d


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("speech-models")
    return {name: build(root / name) for name, build in speech_models.BUILDERS.items()}


def test_each_architecture_runs_on_whose_prompts(tmp_path):
    whisper = _folder(tmp_path, "WhisperForConditionalGeneration")
    qwen2 = _folder(tmp_path, "Qwen2AudioForConditionalGeneration")
    qwen3 = _folder(tmp_path, "Qwen3ASRForConditionalGeneration")
    assert model_kind(whisper) == "whisper" and model_kind(qwen2) == "qwen2_audio"
    assert model_kind(qwen3) == "transcription"
    assert model_kind(whisper, prompts="model") == "transcription"  # Whisper's own class
    with pytest.raises(EngineUnavailable, match="cannot be transcribed with vLLM"):
        model_kind(qwen2, prompts="model")  # vLLM's Qwen2-Audio has no transcription class


def test_an_architecture_vllm_cannot_transcribe_is_refused_with_the_list(tmp_path):
    llama = _folder(tmp_path, "LlamaForCausalLM")
    with pytest.raises(EngineUnavailable) as e:
        model_kind(llama)
    message = str(e.value)
    assert "LlamaForCausalLM" in message and "Qwen2AudioForConditionalGeneration" in message
    assert all(arch in message for arch in TRANSCRIPTION_ARCHITECTURES)


def test_the_refusal_is_one_error_line_before_the_run_is_frozen(tmp_path):
    llama = _folder(tmp_path, "LlamaForCausalLM")
    index = tmp_path / "index.parquet"
    index.write_bytes(b"")  # the engine is checked before the index is read
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "asrd.cli", "plan", f"run.index={index}",
                           f"run.dir={run_dir}", "engine.kind=vllm", f"engine.model={llama}"],
                          capture_output=True, text=True)
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert proc.returncode == 2, proc.stderr
    assert lines[-1].startswith("asrd: error:") and "cannot be transcribed with vLLM" in lines[-1]
    assert not any("Traceback" in x for x in lines)
    assert not (run_dir / "config.yaml").exists()


def test_prompt_makers_are_checked_when_the_config_loads():
    assert config_mod.load(None, []).engine.vllm.prompts == "auto"
    with pytest.raises(config_mod.ConfigError, match="engine.vllm.prompts='class'"):
        config_mod.load(None, ["engine.vllm.prompts=class"])


def test_only_whisper_on_asrd_prompts_packs(tmp_path, folders):
    whisper = tiny_models.build_whisper(tmp_path / "w", weights=False)

    def packs(model, *extra):
        return VllmEngine.packs(config_mod.load(None, ["engine.kind=vllm", f"engine.model={model}",
                                                       *extra]).engine)

    assert packs(whisper)
    assert not packs(whisper, "engine.vllm.prompts=model")  # its class gives no timestamps
    assert not any(packs(folder) for folder in folders.values())


def test_model_folders_name_the_ids_their_tokenizer_gives(folders):
    """Each folder's config.json names the architecture and the audio token ids that its own
    tokenizer gives (a mismatch would place no audio in any prompt)."""
    from transformers import AutoTokenizer

    expected = {"qwen3-asr": ("Qwen3ASRForConditionalGeneration", "<|audio_pad|>",
                              lambda c: c["thinker_config"]["audio_token_id"]),
                "granite-speech": ("GraniteSpeechForConditionalGeneration", "<|audio|>",
                                   lambda c: c["audio_token_index"]),
                "gemma3n": ("Gemma3nForConditionalGeneration", "<audio_soft_token>",
                            lambda c: c["audio_token_id"]),
                "glm-asr": ("GlmAsrForConditionalGeneration", "<|pad|>",
                            lambda c: c["audio_token_id"])}
    assert set(expected) == set(folders)
    for name, (arch, token, token_id) in expected.items():
        config = json.loads((folders[name] / "config.json").read_text())
        assert config["architectures"] == [arch] and arch in TRANSCRIPTION_ARCHITECTURES
        tok = AutoTokenizer.from_pretrained(folders[name])
        assert tok.audio_token == token
        assert token_id(config) == tok.convert_tokens_to_ids(token)
        # every id the tokenizer gives has a row in the text model's embedding (one past it
        # fails on the GPU as a device-side assert in the first step, for every request)
        text = config.get("text_config") or config["thinker_config"]["text_config"]
        assert len(tok) <= text["vocab_size"], (name, len(tok), text["vocab_size"])
        assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                       add_generation_prompt=True).endswith(
            {"qwen3-asr": "<|im_start|>assistant\n", "granite-speech": "<|end_of_role|>",
             "gemma3n": "<start_of_turn>model\n", "glm-asr": "<|assistant|>\n"}[name])


# --- with vLLM importable (a GPU node, or a CPU install of vLLM's Python packages) ----------------

def _vllm_config(model_dir):
    pytest.importorskip("vllm", reason="vLLM is not installed here")
    from vllm.config import DeviceConfig, ModelConfig, VllmConfig

    model = ModelConfig(model=str(model_dir), tokenizer=str(model_dir), mm_processor_cache_gb=0,
                        limit_mm_per_prompt={"audio": 1})
    return VllmConfig(model_config=model, device_config=DeviceConfig(device="cpu"))


@pytest.mark.parametrize("name", ["whisper", "gemma3n"])
def test_the_model_class_prompts_and_renders_asrd_audio(tmp_path, folders, name):
    from asrd.engines.vllm_inputs import InputRenderer, prompt_maker
    from asrd.engines.vllm_transcription import TranscriptionSpec

    folder = (tiny_models.build_whisper(tmp_path / "w", weights=False) if name == "whisper"
              else folders[name])
    vllm_config = _vllm_config(folder)
    spec = TranscriptionSpec("transcribe", "en", "")
    prompts = prompt_maker(spec, None, vllm_config.model_config)
    assert prompts.sample_rate == 16000 and prompts.max_clip_s == 30
    audio = np.random.default_rng(0).normal(0, 0.1, 5 * 16000).astype(np.float32)
    prompt = prompts.prompt(audio, "de", "row-1")
    text = json.dumps(prompt, default=lambda o: None)
    assert ("<|de|>" if name == "whisper" else "into German") in text  # the row's language wins
    rendered = InputRenderer(vllm_config, spec).prepare(audio, None)
    part = rendered["decoder_prompt"] if rendered["type"] == "enc_dec" else rendered
    assert len(part["mm_placeholders"]["audio"]) == 1  # the audio is in the model's input
    with pytest.raises(ValueError, match="longer than the model's 30 s clip"):
        prompts.check(np.zeros(31 * 16000, np.float32))


def test_output_cleaning_takes_the_stated_language(tmp_path, folders):
    from asrd.engines.vllm_transcription import TranscriptionPrompts, TranscriptionSpec

    prompts = TranscriptionPrompts(TranscriptionSpec("transcribe", None, ""),
                                   _vllm_config(folders["gemma3n"]).model_config)
    said = prompts.text("  hello there ")
    assert (said.text, said.language) == ("hello there", None)


def test_engine_arguments_carry_the_attention_backend_and_whisper_sizing(tmp_path):
    pytest.importorskip("vllm", reason="vLLM is not installed here")
    from asrd.engines.vllm_engine import engine_args

    folder = tiny_models.build_whisper(tmp_path / "w", weights=False)
    cfg = config_mod.load(None, ["engine.kind=vllm", f"engine.model={folder}",
                                 "engine.vllm.attention_backend=TRITON_ATTN"])
    args = engine_args(cfg.engine, whisper=True)
    assert str(getattr(args.attention_backend, "name", args.attention_backend)) == "TRITON_ATTN"
    assert (args.max_model_len, args.max_num_seqs, args.max_num_batched_tokens) == (448, 512, 96000)
    assert engine_args(config_mod.load(None, ["engine.kind=vllm", f"engine.model={folder}"]).engine,
                       whisper=False).attention_backend is None
