"""The CPU-side parts of the vLLM engine: its options, where inputs are rendered, the prompt and
the window check. (The engine itself runs only on a GPU: tests/test_vllm_engine.py.)"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from asrd import config as config_mod
from asrd.engines import Hypothesis, preparer_modules
from asrd.audio.pack import Member
from asrd.engines.vllm_inputs import PromptBuilder, PromptSpec, check_window
from asrd.engines.whisper_timestamps import (TIME_STEP_S, WhisperIds, packed_hypotheses,
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
    <|t0|> text <|t1|><|t2|> text <|t3|> ... ; the last piece was cut off (no closing time).
    Each clip's log-probability is the mean over its own text tokens (specials left out)."""
    tok = _whisper_tokenizer()
    ids_of = WhisperIds.of(tok)

    def at(seconds: float) -> int:
        return ids_of.timestamp_begin + round(seconds / TIME_STEP_S)

    def text(words: str) -> list[int]:
        return tok.encode(words, add_special_tokens=False)

    eot = tok.convert_tokens_to_ids("<|endoftext|>")
    ids = ([at(0.0)] + text(" one two") + [at(2.2), at(3.4)] + text(" three four")
           + [at(4.8), at(6.0)] + text(" five") + [eot])
    # one log-probability per token: -1 for the first clip's words, -2 for the second's,
    # -3 for the third's, and -9 for every timestamp and the end token (never counted)
    first, second, third = (len(text(w)) for w in (" one two", " three four", " five"))
    logprobs = ([-9.0] + [-1.0] * first + [-9.0, -9.0] + [-2.0] * second + [-9.0, -9.0]
                + [-3.0] * third + [-9.0])
    decode = lambda t: tok.decode(t, skip_special_tokens=True)  # noqa: E731
    pieces = timed_pieces(ids, ids_of, decode, logprobs)
    assert [(p.start, p.end, p.text.strip()) for p in pieces] == [
        (0.0, 2.2, "one two"), (3.4, 4.8, "three four"), (6.0, float("inf"), "five")]
    members = [Member(0, "a", 0.0, 2.3), Member(1, "b", 3.3, 1.6), Member(2, "c", 5.9, 2.0)]
    assert packed_hypotheses(pieces, members) == [
        Hypothesis("one two", avg_logprob=-1.0), Hypothesis("three four", avg_logprob=-2.0),
        None]
    # without log-probabilities (none asked for): the texts alone
    assert [h and h.text for h in packed_hypotheses(timed_pieces(ids, ids_of, decode), members)
            ] == ["one two", "three four", None]


def _whisper_tokenizer():
    transformers = pytest.importorskip("transformers")
    from asrd.testing import tiny_models

    return transformers.WhisperTokenizerFast(
        tokenizer_file=str(tiny_models.whisper_tokenizer_file()))


@dataclass(frozen=True)
class Logprob:  # the shape of vllm.logprobs.Logprob
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class Completion:  # the fields of vllm.outputs.CompletionOutput that the signals read
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]] | None


@dataclass
class RequestOutput:  # the fields of vllm.outputs.RequestOutput that the signals read
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[int, Logprob] | None] | None
    outputs: list[Completion]


def test_vllm_signals_asked_only_as_needed():
    from asrd.engines.vllm_signals import PROMPT_TOP_K, request_args

    assert request_args("whisper", True) == {"logprobs": 0, "prompt_logprobs": PROMPT_TOP_K}
    assert request_args("whisper", False) == {"logprobs": 0}
    assert request_args("qwen2_audio", True) == {"logprobs": 0}


def test_vllm_whisper_signals_from_a_forced_language_prompt():
    """The output vLLM returns for Whisper with logprobs=0 and prompt_logprobs=K on the prompt
    <|startoftranscript|><|en|><|transcribe|><|notimestamps|>: at the position after
    <|startoftranscript|> the model put German first and <|nospeech|> low."""
    from asrd.engines.vllm_signals import WhisperTokens, hypothesis

    tok = _whisper_tokenizer()
    ids = tok.convert_tokens_to_ids
    tokens = WhisperTokens.of(tok)
    prompt = [ids(t) for t in ("<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                               "<|notimestamps|>")]
    after_sot = {ids("<|en|>"): Logprob(math.log(0.2), 2), ids("<|de|>"): Logprob(math.log(0.6), 1),
                 ids("<|fr|>"): Logprob(math.log(0.1), 3), ids("<|nocaptions|>"): Logprob(math.log(0.05), 4)}
    text_ids = tok.encode(" das ist gut", add_special_tokens=False) + [ids("<|endoftext|>")]
    chosen = [math.log(p) for p in (0.9, 0.5, 0.8, 0.4)][: len(text_ids)]
    out = RequestOutput(prompt, [None, after_sot, {ids("<|transcribe|>"): Logprob(-0.01, 1)},
                                 {ids("<|notimestamps|>"): Logprob(-0.02, 1)}],
                        [Completion(text_ids, [{t: Logprob(lp, 1)} for t, lp in
                                               zip(text_ids, chosen)])])
    h = hypothesis(out, "das ist gut", tokens)
    assert h.text == "das ist gut"
    assert h.avg_logprob == pytest.approx(sum(chosen) / len(chosen))
    assert h.no_speech_prob == pytest.approx(0.05)
    assert h.language == "de" and h.language_p == pytest.approx(0.6 / 0.9)
    # <|nospeech|> not among the listed alternatives: unknown, not zero
    del after_sot[ids("<|nocaptions|>")]
    assert hypothesis(out, "", tokens).no_speech_prob is None
    # no logprobs returned at all (signals not asked for): no signals, same text
    bare = RequestOutput(prompt, None, [Completion(text_ids, None)])
    assert hypothesis(bare, "das ist gut", tokens) == Hypothesis("das ist gut")


def test_vllm_whisper_language_it_chose_itself_comes_free_with_the_output_logprobs():
    """No language forced (engine.language null) and no prompt log-probabilities asked for: the
    first output token is the language Whisper chose, with its log-probability."""
    from asrd.engines.vllm_signals import WhisperTokens, hypothesis

    tok = _whisper_tokenizer()
    ids = tok.convert_tokens_to_ids
    out_ids = [ids("<|de|>"), ids("<|transcribe|>"), ids("<|notimestamps|>"),
               *tok.encode(" das ist gut", add_special_tokens=False)]
    steps = [{t: Logprob(math.log(0.8) if i == 0 else -0.1, 1)} for i, t in enumerate(out_ids)]
    out = RequestOutput([ids("<|startoftranscript|>")], None, [Completion(out_ids, steps)])
    h = hypothesis(out, "das ist gut", WhisperTokens.of(tok))
    assert h.language == "de" and h.language_p == pytest.approx(0.8) and h.no_speech_prob is None
    text_first = RequestOutput(out.prompt_token_ids, None, [Completion(out_ids[3:], steps[3:])])
    assert hypothesis(text_first, "das ist gut", WhisperTokens.of(tok)).language is None


def test_vllm_qwen_signals_are_the_log_probability_only():
    from asrd.engines.vllm_signals import hypothesis

    out = RequestOutput([1, 2, 3], None, [Completion([7, 8], [{7: Logprob(-0.5)},
                                                                {8: Logprob(-1.5), 9: Logprob(-0.3)}])])
    assert hypothesis(out, "hi", None) == Hypothesis("hi", avg_logprob=-1.0)
