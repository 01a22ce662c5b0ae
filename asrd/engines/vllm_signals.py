"""The model's own quality signals from vLLM's outputs: average token log-probability and, for
Whisper, the no-speech probability and the spoken language.

What is asked of vLLM (`request_args`): the log-probability of each chosen output token
(`logprobs=0`, no alternatives) and, for Whisper when `quality.audio_language` is true, the
top `PROMPT_TOP_K` log-probabilities at each decoder prompt position (`prompt_logprobs`).
Whisper predicts, right after <|startoftranscript|>, either a language token or <|nospeech|>:
that one position gives both signals whatever the prompt says next (a forced <|en|>, or no
language at all), as in Whisper's own decoding. The language's probability is its share among
the language tokens listed there (Whisper's definition, over the top K); the no-speech
probability is None when <|nospeech|> is not among the top K (it is then below all of them, so
far from any threshold). When the prompt forces no language, Whisper writes the language token
first: its output log-probability gives the language without prompt log-probabilities.

Pure functions over vLLM's output objects (RequestOutput: `prompt_logprobs`, `outputs[0]` with
`token_ids` and `logprobs`; each log-probability an object with `.logprob`), so that the parsing
is tested on the CPU with outputs of the same shape (tests/test_vllm_inputs.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from asrd.engines.base import Hypothesis

PROMPT_TOP_K = 20  # alternatives listed per decoder prompt position (Whisper)
SOT = "<|startoftranscript|>"
NO_SPEECH = ("<|nospeech|>", "<|nocaptions|>")  # large-v3 names it nospeech, older nocaptions


def request_args(kind: str, detection: bool) -> dict[str, Any]:
    """SamplingParams arguments that ask for the signals; `detection`: also Whisper's spoken
    language and no-speech probability (prompt log-probabilities: vLLM computes them request
    by request, which costs far more GPU throughput than the output's log-probabilities)."""
    return {"logprobs": 0,
            **({"prompt_logprobs": PROMPT_TOP_K} if detection and kind == "whisper" else {})}


@dataclass(frozen=True)
class WhisperTokens:
    """The ids of Whisper's special tokens that carry the signals."""

    sot: int
    no_speech: int | None
    languages: dict[int, str]  # token id -> language code

    @classmethod
    def of(cls, tokenizer: Any) -> "WhisperTokens":
        from transformers.models.whisper.tokenization_whisper import LANGUAGES

        def token_id(token: str) -> int | None:
            i = tokenizer.convert_tokens_to_ids(token)
            return None if i is None or i == tokenizer.unk_token_id else int(i)

        languages = {i: code for code in LANGUAGES if (i := token_id(f"<|{code}|>")) is not None}
        no_speech = next((i for t in NO_SPEECH if (i := token_id(t)) is not None), None)
        sot = token_id(SOT)
        if sot is None:
            raise ValueError(f"the tokenizer has no {SOT} token: not a Whisper tokenizer")
        return cls(sot, no_speech, languages)


def token_logprobs(output: Any) -> list[float | None] | None:
    """Each chosen output token's log-probability (None where vLLM listed none; None for all
    when none were asked for)."""
    completion = output.outputs[0]
    steps = completion.logprobs
    if not steps:
        return None
    return [step[token].logprob if step and token in step else None
            for token, step in zip(completion.token_ids, steps)]


def avg_logprob(output: Any) -> float | None:
    """Mean log-probability of the chosen output tokens (None when none were returned)."""
    chosen = [lp for lp in token_logprobs(output) or [] if lp is not None]
    return sum(chosen) / len(chosen) if chosen else None


def whisper_start(output: Any, tokens: WhisperTokens
                  ) -> tuple[float | None, str | None, float | None]:
    """(no-speech probability, language, its probability) at the position after
    <|startoftranscript|> in the decoder prompt; Nones when vLLM returned no prompt logprobs."""
    prompt = list(output.prompt_token_ids or [])
    listed = output.prompt_logprobs or []
    if tokens.sot not in prompt:
        return None, None, None
    at = prompt.index(tokens.sot) + 1  # prompt_logprobs[i]: the token at i given those before
    if at >= len(listed) or not listed[at]:
        return None, None, None
    step = {int(k): v.logprob for k, v in listed[at].items()}
    no_speech = (math.exp(step[tokens.no_speech])
                 if tokens.no_speech is not None and tokens.no_speech in step else None)
    langs = {tokens.languages[k]: math.exp(lp) for k, lp in step.items() if k in tokens.languages}
    if not langs:
        return no_speech, None, None
    best = max(langs, key=langs.__getitem__)
    return no_speech, best, langs[best] / sum(langs.values())


def generated_language(output: Any, tokens: WhisperTokens) -> tuple[str | None, float | None]:
    """The language Whisper chose itself when the prompt forced none (its first output token),
    with that token's probability: free with the output log-probabilities."""
    completion = output.outputs[0]
    ids, steps = list(completion.token_ids), completion.logprobs
    if not ids or ids[0] not in tokens.languages or not steps or ids[0] not in (steps[0] or {}):
        return None, None
    return tokens.languages[ids[0]], math.exp(steps[0][ids[0]].logprob)


def hypothesis(output: Any, text: str, tokens: WhisperTokens | None) -> Hypothesis:
    """A request's text with its signals (`tokens`: Whisper's, None for other models)."""
    no_speech = language = language_p = None
    if tokens is not None:
        no_speech, language, language_p = whisper_start(output, tokens)
        if language is None:
            language, language_p = generated_language(output, tokens)
    return Hypothesis(text, avg_logprob(output), no_speech, language, language_p)
