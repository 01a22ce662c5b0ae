"""The CPU-side parts of the vLLM engine: its options, where inputs are rendered, the prompt and
the window check. (The engine itself runs only on a GPU: tests/test_vllm_engine.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from asrd import config as config_mod
from asrd.engines import EngineUnavailable, preparer_modules
from asrd.audio.pack import Member, split_by_time
from asrd.engines.vllm_inputs import (TIME_STEP_S, PromptBuilder, PromptSpec, check_window,
                                      timed_pieces)


def test_vllm_options_are_checked_when_the_config_loads():
    engine = config_mod.load(None, ["engine.kind=vllm", "engine.vllm.render_in=engine",
                                    "engine.vllm.render_threads=4", "engine.vllm.max_num_seqs=64"]).engine
    assert (engine.vllm.render_in, engine.vllm.render_threads, engine.vllm.max_num_seqs) == (
        "engine", 4, 64)
    assert config_mod.load(None, []).engine.vllm.render_in == "decode"
    with pytest.raises(config_mod.ConfigError, match="engine.vllm.render_in='gpu'"):
        config_mod.load(None, ["engine.vllm.render_in=gpu"])
    with pytest.raises(config_mod.ConfigError, match="engine.vllm.block_size"):
        config_mod.load(None, ["engine.vllm.block_size=32"])


@pytest.mark.parametrize("overrides, expected", [
    (["engine.kind=vllm"], ["asrd.engines.vllm_inputs", "vllm.renderers"]),
    (["engine.kind=vllm", "engine.vllm.render_in=engine"], []),
    (["engine.kind=faster_whisper"], []),
])
def test_decode_actors_preload_vllm_only_when_they_render(overrides, expected):
    assert preparer_modules(config_mod.load(None, overrides).engine) == expected


def test_whisper_prompt_carries_the_segment_language_over_the_config():
    spec = PromptSpec("whisper", "transcribe", "", None, "en", "cpu")
    prompts = PromptBuilder(spec, tokenizer=None)  # Whisper's prompt needs no chat template
    audio = np.zeros(16000, np.float32)
    de = prompts.prompt(audio, "de", "id-1")
    assert de["decoder_prompt"] == "<|startoftranscript|><|de|><|transcribe|><|notimestamps|>"
    assert de["encoder_prompt"]["multi_modal_uuids"] == {"audio": ["id-1"]}
    assert "mm_processor_kwargs" not in de["encoder_prompt"]  # CPU features: no device kwarg
    assert "<|en|>" in prompts.prompt(audio, None, "id-2")["decoder_prompt"]


def test_window_check_refuses_what_the_model_would_cut():
    check_window(np.zeros(30 * 16000, np.float32))
    with pytest.raises(ValueError, match="longer than the model's 30 s window"):
        check_window(np.zeros(30 * 16000 + 1, np.float32), 3)
    with pytest.raises(ValueError, match="mono"):
        check_window(np.zeros((2, 16000), np.float32))


def test_packed_window_prompt_asks_for_timestamps():
    prompts = PromptBuilder(PromptSpec("whisper", "transcribe", "", None, "en", "cpu"), None)
    audio = np.zeros(16000, np.float32)
    timed = prompts.prompt(audio, "en", "id-3", timestamps=True)["decoder_prompt"]
    assert timed == "<|startoftranscript|><|en|><|transcribe|>"
    assert prompts.prompt(audio, "en", "id-4")["decoder_prompt"].endswith("<|notimestamps|>")


def test_whisper_output_with_timestamps_splits_back_to_its_clips():
    """Token ids as Whisper writes them for a packed window (the real Whisper-base vocabulary):
    <|t0|> text <|t1|><|t2|> text <|t3|> ... ; the last piece was cut off (no closing time)."""
    transformers = pytest.importorskip("transformers")
    from asrd.testing import tiny_models

    tok = transformers.WhisperTokenizerFast(
        tokenizer_file=str(tiny_models.whisper_tokenizer_file()))
    begin = tok.convert_tokens_to_ids("<|notimestamps|>") + 1  # <|0.00|>

    def at(seconds: float) -> int:
        return begin + round(seconds / TIME_STEP_S)

    def text(words: str) -> list[int]:
        return tok.encode(words, add_special_tokens=False)

    ids = ([at(0.0)] + text(" one two") + [at(2.2), at(3.4)] + text(" three four")
           + [at(4.8), at(6.0)] + text(" five") + [tok.convert_tokens_to_ids("<|endoftext|>")])
    decode = lambda t: tok.decode(t, skip_special_tokens=True)  # noqa: E731
    pieces = timed_pieces(ids, begin, decode)
    assert [(a, b, t.strip()) for a, b, t in pieces] == [
        (0.0, 2.2, "one two"), (3.4, 4.8, "three four"), (6.0, float("inf"), "five")]
    members = [Member(0, "a", 0.0, 2.3), Member(1, "b", 3.3, 1.6), Member(2, "c", 5.9, 2.0)]
    assert split_by_time(pieces, members) == ["one two", "three four", None]
