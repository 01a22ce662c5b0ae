"""Offline folders of speech models that vLLM runs through their own transcription class
(Qwen3-ASR, Granite Speech, Gemma 3n), for the generic engine's GPU tests and benchmarks.

Why: nothing may be downloaded, so each folder is built here: a config.json of the published
checkpoint's size (vLLM's `load_format="dummy"` then makes random weights of that size: rates
are real, words are not), the processor files the model's vLLM class loads, and a tokenizer. The
tokenizer is the Whisper-base byte-level BPE of `tiny_models` with the model's own special tokens
added (their ids differ from the real checkpoint's; config.json names the ids this tokenizer
gives them), so prompts have the real layout but not the real token count of their text.

Sizes (the reference checkpoints' config.json, as the transformers config classes of the same
names document them): Qwen3-ASR-1.7B (a 24-layer 1024-wide audio encoder, the Qwen3-1.7B text
model), granite-speech-3.3-2b (a 16-layer conformer, a 2-layer Q-Former projector, the
granite-3.3-2b text model), gemma-3n-E4B (transformers' Gemma3nConfig defaults). Voxtral is not
built: vLLM's Voxtral class takes only Mistral's own tokenizer format (tekken.json with its audio
settings), which this offline builder does not make.

    python -m asrd.testing.speech_models qwen3-asr OUT_DIR
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
        "text_config": dict(model_type="granite", vocab_size=49160, hidden_size=2048,
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


BUILDERS: dict[str, Callable[[str | Path], Path]] = {
    "qwen3-asr": build_qwen3_asr,
    "granite-speech": build_granite_speech,
    "gemma3n": build_gemma3n,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m asrd.testing.speech_models",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", choices=sorted(BUILDERS))
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    print(json.dumps({"dir": str(BUILDERS[args.model](args.out_dir)), "model": args.model}))


if __name__ == "__main__":
    main()
