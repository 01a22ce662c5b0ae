"""Offline folders of speech models that vLLM runs through their own transcription class
(Qwen3-ASR, Granite Speech, Gemma 3n, GLM-ASR, Voxtral, FireRedLID), for the generic engine's
GPU tests and benchmarks.

Why: nothing may be downloaded, so each folder is built here: a config.json of the published
checkpoint's size (vLLM's `load_format="dummy"` then makes random weights of that size: rates
are real, words are not), the processor files the model's vLLM class loads, and a tokenizer. The
tokenizer is the Whisper-base byte-level BPE of `tiny_models` with the model's own special tokens
added (their ids differ from the real checkpoint's; config.json names the ids this tokenizer
gives them), so prompts have the real layout but not the real token count of their text.

Sizes (the reference checkpoints' config.json, as the transformers config classes of the same
names document them): Qwen3-ASR-1.7B (a 24-layer 1024-wide audio encoder, the Qwen3-1.7B text
model), granite-speech-3.3-2b (a 16-layer conformer, a 2-layer Q-Former projector, the
granite-3.3-2b text model), gemma-3n-E4B (transformers' Gemma3nConfig defaults),
GLM-ASR-Nano-2512 (transformers' GlmAsrConfig defaults), FireRedLID (vLLM's FireRedLIDConfig
defaults; its tokenizer holds the language labels, not the Whisper BPE).

Voxtral-Mini-3B-2507 is in Mistral's own layout, the only one vLLM's Voxtral class reads:
params.json (the Ministral-3B-sized text model, 30 layers 3072 wide, and a Whisper-large-v3-sized
encoder, 32 layers 1280 wide, whose frames are stacked by 4 into 12.5 tokens per second) and
tekken.json (mistral_common's tokenizer file). Its vocabulary is the Tekken byte-level BPE that
mistral_common itself ships (tekken_240911.json: 131,072 ids of which the first 1,000 are
special, the size of Voxtral's own), with the special tokens a transcription prompt uses
([INST], [BEGIN_AUDIO], [AUDIO], [TRANSCRIBE]) and the audio section (16 kHz, 128 mel bins,
30 s chunks). Prompts therefore have the real layout and the real token count of their text.

Not built (vLLM 0.25.0's classes): Kimi-Audio (its tokenizer reads Kimi's own tiktoken.model, and
its config.json's model type is the checkpoint's remote code), MOSS transcribe-diarize (a folder
of transformers' config, MossTranscribeDiarizeProcessor and a tokenizer gives vLLM's class its
transcription config, prompt and output cleaning, as tests/test_speaker_turns.py builds one, but
rendering its input fails: vLLM's processing reads `audio_feature_lengths`, which transformers'
processor does not return), Cohere ASR (a SentencePiece vocabulary, which the
Whisper BPE cannot stand in for), FunASR and FireRedASR2 (buildable as FireRedLID is, from
Qwen2's config and their processors' CMVN settings, but their features need torchaudio or
kaldi_native_fbank), Qwen3-Omni (a 30B MoE whose processor needs torchvision).

    python -m asrd.testing.speech_models qwen3-asr OUT_DIR
    python -m asrd.testing.speech_models voxtral OUT_DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from asrd.testing.tiny_models import whisper_tokenizer_file

CHATML = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GEMMA_CHAT = (
    "{{ bos_token }}{% for message in messages %}"
    "<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n"
    "{{ message['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def _tokenizer(special: list[str], named: dict[str, str], chat_template: str, eos: str,
               bos: str | None = None, plain: tuple[str, ...] = ()):
    """The Whisper BPE (without Whisper's prefix template) plus `special` tokens, some of them
    also reachable by name (`tokenizer.audio_token`), and `plain` text tokens, with a chat
    template."""
    from tokenizers import AddedToken, Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_file(str(whisper_tokenizer_file()))
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos, bos_token=bos,
                                   pad_token="<|endoftext|>", unk_token=None,
                                   chat_template=chat_template, extra_special_tokens=named)


def _ids(tok, *tokens: str) -> list[int]:
    return [int(tok.convert_tokens_to_ids(t)) for t in tokens]


def _write(out: Path, config: dict[str, Any], tok, extra: dict[str, dict[str, Any]]) -> Path:
    """config.json, generation_config.json, the tokenizer and the processor's files."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": _ids(tok, tok.eos_token) + [int(tok.pad_token_id)],
         "pad_token_id": int(tok.pad_token_id)}))
    tok.save_pretrained(out)
    for name, content in extra.items():
        (out / name).write_text(json.dumps(content, indent=1))
    return out


def build_qwen3_asr(out_dir: str | Path) -> Path:
    """Qwen3-ASR-1.7B: config.json in the checkpoint's own layout (a `thinker_config` with the
    audio encoder and the text model), the Whisper feature extractor (128 mel bins)."""
    from transformers import WhisperFeatureExtractor

    tokens = ["<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_pad|>", "<|audio_end|>",
              "<asr_text>"]
    tok = _tokenizer(tokens, {"audio_token": "<|audio_pad|>", "audio_bos_token": "<|audio_start|>",
                              "audio_eos_token": "<|audio_end|>"}, CHATML, eos="<|im_end|>")
    im_start, im_end, audio_start, audio_pad, _, _ = _ids(tok, *tokens)
    text = dict(model_type="qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                max_position_embeddings=65536, rope_theta=1000000, rms_norm_eps=1e-6,
                tie_word_embeddings=True, hidden_act="silu")
    audio = dict(num_mel_bins=128, encoder_layers=24, encoder_attention_heads=16,
                 encoder_ffn_dim=4096, d_model=1024, output_dim=2048, max_source_positions=1500,
                 n_window=50, n_window_infer=800, conv_chunksize=500, downsample_hidden_size=480)
    config = {"architectures": ["Qwen3ASRForConditionalGeneration"], "model_type": "qwen3_asr",
              "thinker_config": {"audio_config": audio, "text_config": text,
                                 "audio_token_id": audio_pad, "audio_start_token_id": audio_start,
                                 "model_type": "qwen3_asr_thinker"},
              "support_languages": ["English", "German", "French", "Spanish"],
              "torch_dtype": "bfloat16", "eos_token_id": im_end, "bos_token_id": im_start}
    out = _write(Path(out_dir), config, tok, {})
    WhisperFeatureExtractor(feature_size=128, return_attention_mask=True).save_pretrained(out)
    return out


def build_granite_speech(out_dir: str | Path) -> Path:
    """granite-speech-3.3-2b: the conformer encoder, the Q-Former projector and the granite
    text model, with transformers' GraniteSpeechProcessor files."""
    tokens = ["<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>", "<|audio|>"]
    chat = ("{% for message in messages %}<|start_of_role|>{{ message['role'] }}<|end_of_role|>"
            "{{ message['content'] }}<|end_of_text|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|start_of_role|>assistant<|end_of_role|>{% endif %}")
    tok = _tokenizer(tokens, {"audio_token": "<|audio|>"}, chat, eos="<|end_of_text|>")
    (audio_id,) = _ids(tok, "<|audio|>")
    config = {
        "architectures": ["GraniteSpeechForConditionalGeneration"], "model_type": "granite_speech",
        "audio_token_index": audio_id, "downsample_rate": 5, "window_size": 15,
        "has_lora_adapter": False, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
        "encoder_config": dict(model_type="granite_speech_encoder", input_dim=160, num_layers=16,
                               hidden_dim=1024, feedforward_mult=4, num_heads=8, dim_head=128,
                               output_dim=42, context_size=200, max_pos_emb=512,
                               conv_kernel_size=15, conv_expansion_factor=2, dropout=0.1),
        "projector_config": dict(model_type="blip_2_qformer", hidden_size=1024,
                                 encoder_hidden_size=1024, num_hidden_layers=2,
                                 num_attention_heads=16, intermediate_size=4096,
                                 cross_attention_frequency=1, llm_dim=2048,
                                 max_position_embeddings=2048, layer_norm_eps=1e-12),
        # Granite's 49,160 rows, or more where this tokenizer (the Whisper BPE plus the added
        # tokens) gives higher ids: an id past the embedding is a device-side assert on a GPU
        "text_config": dict(model_type="granite", vocab_size=max(49160, len(tok)), hidden_size=2048,
                            intermediate_size=8192, num_hidden_layers=40,
                            num_attention_heads=32, num_key_value_heads=8,
                            max_position_embeddings=131072, rope_theta=10000000,
                            rms_norm_eps=1e-5, tie_word_embeddings=True,
                            embedding_multiplier=12.0, logits_scaling=8.0,
                            residual_multiplier=0.22, attention_multiplier=0.015625,
                            eos_token_id=int(tok.eos_token_id), pad_token_id=int(tok.pad_token_id)),
    }
    # The feature extractor's settings written as its class would (building it needs
    # torchaudio, which the CPU install does not carry; the GPU machine's image has it).
    features = {"feature_extractor_type": "GraniteSpeechFeatureExtractor",
                "processor_class": "GraniteSpeechProcessor", "sampling_rate": 16000,
                "n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 80,
                "projector_window_size": 15, "projector_downsample_rate": 5,
                "padding_value": 0.0}
    return _write(Path(out_dir), config, tok, {
        "preprocessor_config.json": features,
        "processor_config.json": {"processor_class": "GraniteSpeechProcessor",
                                  "audio_token": "<|audio|>"}})


def build_gemma3n(out_dir: str | Path) -> Path:
    """gemma-3n-E4B (transformers' Gemma3nConfig defaults) with the image and audio token ids
    of this tokenizer, and transformers' Gemma3nProcessor files."""
    from transformers import (Gemma3nAudioFeatureExtractor, Gemma3nConfig, Gemma3nProcessor,
                              SiglipImageProcessor)

    named = {"image_token": "<image_soft_token>", "boi_token": "<start_of_image>",
             "eoi_token": "<end_of_image>", "audio_token": "<audio_soft_token>",
             "boa_token": "<start_of_audio>", "eoa_token": "<end_of_audio>"}
    tokens = ["<bos>", "<start_of_turn>", "<end_of_turn>", *named.values()]
    # Gemma's vocabulary has runs of one to four newlines as tokens (vLLM's Gemma 3n class
    # merges them after placing the audio)
    tok = _tokenizer(tokens, named, GEMMA_CHAT, eos="<end_of_turn>", bos="<bos>",
                     plain=tuple("\n" * n for n in range(1, 5)))
    ids = dict(zip(named, _ids(tok, *named.values())))
    config = Gemma3nConfig(
        image_token_id=ids["image_token"], boi_token_id=ids["boi_token"],
        eoi_token_id=ids["eoi_token"], audio_token_id=ids["audio_token"],
        boa_token_id=ids["boa_token"], eoa_token_id=ids["eoa_token"]).to_dict()
    config["architectures"] = ["Gemma3nForConditionalGeneration"]
    config["torch_dtype"] = "bfloat16"
    out = _write(Path(out_dir), config, tok, {})
    Gemma3nProcessor(Gemma3nAudioFeatureExtractor(), SiglipImageProcessor(size={"height": 768,
                     "width": 768}), tok, chat_template=GEMMA_CHAT).save_pretrained(out)
    return out


# The special tokens of Mistral's Tekken v7 files at their ranks as far as known here (the
# checkpoint's own file is not); vLLM reads every id from this file, so prompts are consistent
# either way. The other ranks below 1,000 are fillers (<SPECIAL_n>), as in Mistral's files.
TEKKEN_SPECIAL = {0: "<unk>", 1: "<s>", 2: "</s>", 3: "[INST]", 4: "[/INST]",
                  5: "[AVAILABLE_TOOLS]", 6: "[/AVAILABLE_TOOLS]", 7: "[TOOL_RESULTS]",
                  8: "[/TOOL_RESULTS]", 9: "[TOOL_CALLS]", 10: "[IMG]", 11: "<pad>",
                  12: "[IMG_BREAK]", 13: "[IMG_END]", 14: "[PREFIX]", 15: "[MIDDLE]",
                  16: "[SUFFIX]", 17: "[SYSTEM_PROMPT]", 18: "[/SYSTEM_PROMPT]",
                  19: "[TOOL_CONTENT]", 24: "[AUDIO]", 25: "[BEGIN_AUDIO]", 32: "[ARGS]",
                  33: "[CALL_ID]", 34: "[TRANSCRIBE]"}
VOXTRAL_AUDIO = dict(sampling_rate=16000, frame_rate=12.5, num_mel_bins=128, hop_length=160,
                     window_size=400, chunk_length_s=30.0)


def tekken_vocabulary() -> Path:
    """The Tekken BPE file that mistral_common ships (installed with vLLM)."""
    try:
        import mistral_common
    except ImportError as e:
        raise RuntimeError("the Voxtral folder takes its vocabulary from mistral_common, which "
                           f"vLLM installs: pip install mistral_common ({e})") from e
    return Path(mistral_common.__file__).parent / "data" / "tekken_240911.json"


def build_voxtral(out_dir: str | Path) -> Path:
    """Voxtral-Mini-3B-2507 in Mistral's layout: params.json and tekken.json (tokenizer version
    v7, the first with audio), no config.json."""
    tekken = json.loads(tekken_vocabulary().read_text())
    tekken.pop("image", None)
    num_special = int(tekken["config"]["default_num_special_tokens"])
    tekken["config"]["version"] = "v7"
    tekken["special_tokens"] = [
        {"rank": i, "token_str": TEKKEN_SPECIAL.get(i, f"<SPECIAL_{i}>"), "is_control": True}
        for i in range(num_special)]
    audio = dict(VOXTRAL_AUDIO)
    encoding = {k: audio.pop(k) for k in ("num_mel_bins", "hop_length", "window_size")}
    tekken["audio"] = {**audio, "audio_encoding_config": encoding}
    encoder = dict(audio_encoding_args=VOXTRAL_AUDIO, dim=1280, n_layers=32, head_dim=64,
                   hidden_dim=5120, n_heads=20, vocab_size=51866, max_source_positions=1500)
    params = dict(dim=3072, n_layers=30, head_dim=128, hidden_dim=8192, n_heads=32, n_kv_heads=8,
                  rope_theta=100000000.0, norm_eps=1e-5,
                  vocab_size=int(tekken["config"]["default_vocab_size"]),
                  max_position_embeddings=32768, dtype="bfloat16",
                  multimodal={"whisper_model_args": {
                      "encoder_args": encoder, "downsample_args": {"downsample_factor": 4}}})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "params.json").write_text(json.dumps(params, indent=1))
    (out / "tekken.json").write_text(json.dumps(tekken))
    return out


def build_glm_asr(out_dir: str | Path) -> Path:
    """GLM-ASR-Nano-2512 (transformers' GlmAsrConfig defaults: a 32-layer 1280-wide Whisper-style
    encoder, a 28-layer 2048-wide llama text model) with transformers' GlmAsrProcessor files
    (the Whisper feature extractor, 128 mel bins) and GLM's chat layout."""
    from transformers import GlmAsrConfig, GlmAsrProcessor, WhisperFeatureExtractor

    chat = ("[gMASK]<sop>{% for message in messages %}<|{{ message['role'] }}|>\n"
            "{{ message['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    tokens = ["[gMASK]", "<sop>", "<|user|>", "<|assistant|>", "<|endoftext|>", "<|pad|>"]
    tok = _tokenizer(tokens, {"audio_token": "<|pad|>"}, chat, eos="<|user|>")
    _, _, user, _, end, pad = _ids(tok, *tokens)
    config = GlmAsrConfig(audio_token_id=pad, text_config={"eos_token_id": [end, user]}).to_dict()
    config["architectures"] = ["GlmAsrForConditionalGeneration"]
    config["torch_dtype"] = "bfloat16"
    out = _write(Path(out_dir), config, tok, {})
    GlmAsrProcessor(WhisperFeatureExtractor(feature_size=128, return_attention_mask=True), tok,
                    chat_template=chat, audio_token="<|pad|>").save_pretrained(out)
    return out


def build_fireredlid(out_dir: str | Path) -> Path:
    """FireRedLID (language ID): a 16-layer 1280-wide conformer encoder and a 6-layer decoder
    over 120 output tokens (the defaults of vLLM's FireRedLIDConfig), with
    vLLM's FireRedLIDProcessor files. The tokenizer is a word-level vocabulary: the five
    control tokens at the ids config.json names, the language codes vLLM's class accepts, then
    dialect labels (`<dialect_N>`: the checkpoint's dict.txt is not here) up to 120. The CMVN
    statistics are the identity (the checkpoint's come from its cmvn.ark); computing the
    features needs kaldi_native_fbank, as vLLM's processor does."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from vllm.model_executor.models.fireredlid import FireRedLIDForConditionalGeneration

    control = ["<blank>", "<unk>", "<pad>", "<sos>", "<eos>"]
    labels = control + list(FireRedLIDForConditionalGeneration.supported_languages)
    labels += [f"<dialect_{i}>" for i in range(120 - len(labels))]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(labels)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                  bos_token="<sos>", eos_token="<eos>")
    tok.add_special_tokens({"additional_special_tokens": ["<blank>"]})
    config = dict(architectures=["FireRedLIDForConditionalGeneration"], model_type="fireredlid",
                  vocab_size=len(labels), lid_odim=len(labels), idim=80, d_model=1280, n_head=20,
                  n_layers_enc=16, n_layers_lid_dec=6, kernel_size=33, pe_maxlen=5000,
                  pad_token_id=2, bos_token_id=3, eos_token_id=4, decoder_start_token_id=3,
                  tie_word_embeddings=True, is_encoder_decoder=True, torch_dtype="bfloat16")
    features = dict(feature_extractor_type="FireRedLIDFeatureExtractor",
                    processor_class="FireRedLIDProcessor", feature_size=80, sampling_rate=16000,
                    chunk_length=30, padding_value=0.0, dim=80, means=[0.0] * 80,
                    inverse_std_variences=[1.0] * 80, num_mel_bins=80, frame_length=25,
                    frame_shift=10, dither=0.0, left_context=3, right_context=3)
    return _write(Path(out_dir), config, tok, {
        "preprocessor_config.json": features,
        "processor_config.json": {"processor_class": "FireRedLIDProcessor"}})


BUILDERS: dict[str, Callable[[str | Path], Path]] = {
    "qwen3-asr": build_qwen3_asr,
    "granite-speech": build_granite_speech,
    "gemma3n": build_gemma3n,
    "glm-asr": build_glm_asr,
}
# Folders made from files of vLLM's own packages (mistral_common's vocabulary, the language
# list of vLLM's FireRedLID class): built only where vLLM is installed
VLLM_PACKAGE_BUILDERS: dict[str, Callable[[str | Path], Path]] = {
    "voxtral": build_voxtral, "fireredlid": build_fireredlid}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m asrd.testing.speech_models",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    builders = {**BUILDERS, **VLLM_PACKAGE_BUILDERS}
    parser.add_argument("model", choices=sorted(builders))
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    try:
        out = builders[args.model](args.out_dir)
    except (RuntimeError, ImportError) as e:  # the packages a builder reads from are missing
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(json.dumps({"dir": str(out), "model": args.model}))


if __name__ == "__main__":
    main()
