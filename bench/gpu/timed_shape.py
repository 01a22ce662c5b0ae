"""A benchmark-only vLLM engine whose random-weight output has the shape a real Whisper gives a
packed window, so that throughput runs time the whole pipeline, split-back included.

With random weights (vLLM's load_format="dummy") a packed window's output holds no timestamps,
so no clip can be placed and every clip goes round again alone: a packed run would time the
fallback, not packing. This engine asks vLLM for exactly as many tokens as a real model writes
for the window's clips (`TOKENS_PER_SPEECH_S` per second of each clip, plus its two boundary
timestamps), so the GPU does the real amount of decoding, then lays those tokens out as Whisper
would: <|offset|> text... <|offset+length|> per clip. The split-back then places every clip.

Selected as a plug-in class, nothing in asrd knows of it:
    engine.kind=bench.gpu.timed_shape:TimedShapeVllmEngine   (with PYTHONPATH at the repository)
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Sequence

from asrd.audio.pack import Member
from asrd.engines.base import Hypothesis, PackedWindow
from asrd.engines.vllm_engine import VllmEngine
from asrd.engines.vllm_signals import token_logprobs
from asrd.engines.whisper_timestamps import (TIME_STEP_S, WhisperIds, packed_hypotheses,
                                             timed_pieces)

# Output tokens the real Whisper-base writes per second of speech (text and end token), measured
# on the espeak-ng labelled set (bench/gpu/real_speech_e2e.py; bench/RESULTS.md).
TOKENS_PER_SPEECH_S = 4.5

# The output length of the window a request belongs to (set per asyncio task, read when vLLM's
# sampling parameters are made for it).
_WINDOW_TOKENS: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "window_tokens", default=None)


def clip_tokens(length_s: float) -> int:
    """Text tokens a real model writes for a clip of this length."""
    return max(1, round(TOKENS_PER_SPEECH_S * length_s))


def window_tokens(members: Sequence[Member]) -> int:
    """A window's whole output: each clip's text and its two boundary timestamps."""
    return sum(clip_tokens(m.length_s) + 2 for m in members)


def timestamped(generated: Sequence[int], members: Sequence[Member], ids: WhisperIds,
                logprobs: Sequence[float | None] | None = None
                ) -> tuple[list[int], list[float | None]]:
    """The generated tokens laid out as Whisper's timestamped output of the window: per clip
    <|offset|>, its share of text tokens (generated ids folded below the special tokens) and
    <|offset+length|>. Returns the tokens and their log-probabilities (None for timestamps)."""
    out: list[int] = []
    lps: list[float | None] = []
    k = 0

    def stamp(t: float) -> None:
        out.append(ids.timestamp_begin + round(t / TIME_STEP_S))
        lps.append(None)

    for m in members:
        stamp(m.offset_s)
        for _ in range(clip_tokens(m.length_s)):
            token = generated[k % len(generated)] if generated else 0
            out.append(int(token) % ids.first_special)
            lps.append(logprobs[k % len(logprobs)] if logprobs else None)
            k += 1
        stamp(m.offset_s + m.length_s)
    return out, lps


class TimedShapeVllmEngine(VllmEngine):
    """VllmEngine whose packed windows decode the real token count and come back timestamped."""

    def sampling_params(self, timestamps: bool = False):
        params = super().sampling_params(timestamps)
        n = _WINDOW_TOKENS.get()
        if timestamps and n is not None:
            params.max_tokens = n
        return params

    def hypotheses_windows(self, windows: list[PackedWindow]) -> list[list[Hypothesis | None]]:
        outputs = self.submit(self._windows(windows)).result()
        decode = lambda t: self._tokenizer.decode(t, skip_special_tokens=True)  # noqa: E731
        result = []
        for out, w in zip(outputs, windows, strict=True):
            tokens, lps = timestamped(out.outputs[0].token_ids, w.members, self._whisper_ids,
                                      token_logprobs(out))
            result.append(packed_hypotheses(timed_pieces(tokens, self._whisper_ids, decode, lps),
                                            list(w.members)))
        return result

    async def _windows(self, windows: list[PackedWindow]) -> list[Any]:
        return await asyncio.gather(*(self._window(w) for w in windows))

    async def _window(self, window: PackedWindow) -> Any:
        _WINDOW_TOKENS.set(window_tokens(window.members))  # this task's context only
        return await self._one(window.segment, timestamps=True)
