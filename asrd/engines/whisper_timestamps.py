"""Whisper's timestamped output, split back to the clips of a packed window (asrd.audio.pack).

Shared by the engines that read Whisper's output tokens themselves (transformers, vLLM); a
packed window is transcribed with timestamps and each clip gets the words between its
boundaries, with the mean log-probability of those words' tokens as its confidence (the
window's no-speech probability and language are not the clip's, so a packed clip has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from asrd.audio.pack import Member, assign_by_time
from asrd.engines.base import Hypothesis

TIME_STEP_S = 0.02  # Whisper's timestamp tokens count in steps of 20 ms
# A packed window's output may take Whisper's whole decoder (448 positions) less its prompt:
# 30 s of dense speech with a timestamp pair per clip runs past a per-segment cap of 128
# tokens, and a cut-off window's last clip cannot be placed.
WINDOW_MAX_TOKENS = 440


@dataclass(frozen=True)
class TimedPiece:
    """Text between two timestamp tokens, with its tokens' log-probabilities where known."""

    start: float
    end: float  # inf: the output was cut off after it
    text: str
    logprobs: tuple[float, ...] = ()


@dataclass(frozen=True)
class WhisperIds:
    """Where Whisper's special and timestamp tokens start in its vocabulary: ids from
    `first_special` (<|endoftext|>) are special, those from `timestamp_begin` timestamps."""

    first_special: int
    timestamp_begin: int

    @classmethod
    def of(cls, tokenizer: Any) -> WhisperIds:
        # <|0.00|> follows <|notimestamps|> in every Whisper vocabulary (not every tokenizer
        # file lists the timestamp tokens themselves)
        return cls(int(tokenizer.convert_tokens_to_ids("<|endoftext|>")),
                   int(tokenizer.convert_tokens_to_ids("<|notimestamps|>")) + 1)


def timed_pieces(token_ids: Sequence[int], ids: WhisperIds, decode: Callable[[list[int]], str],
                 logprobs: Sequence[float | None] | None = None) -> list[TimedPiece]:
    """Whisper's output with timestamps as pieces: each piece's text stands between two
    timestamp tokens; other special tokens are left out. Text after the last timestamp (the
    output was cut off) ends at infinity, so that it cannot be placed with confidence."""
    pieces: list[TimedPiece] = []
    start: float | None = None
    text: list[int] = []
    lps: list[float] = []

    def close(end: float) -> None:
        words = decode(text)
        if words.strip():
            pieces.append(TimedPiece(start if start is not None else 0.0, end, words,
                                     tuple(lps)))

    for k, token in enumerate(token_ids):
        if token >= ids.timestamp_begin:
            t = (token - ids.timestamp_begin) * TIME_STEP_S
            closing = start is not None and bool(text)
            if closing:
                close(t)
            start = None if closing else t
            text, lps = [], []
        elif token < ids.first_special:
            text.append(token)
            lp = logprobs[k] if logprobs is not None else None
            if lp is not None:
                lps.append(lp)
    if text:
        close(float("inf"))
    return pieces


def packed_hypotheses(pieces: list[TimedPiece], members: list[Member]
                      ) -> list[Hypothesis | None]:
    """Each clip's text and mean token log-probability (None where its words cannot be
    placed: the pipeline then transcribes the clip alone)."""
    out: list[Hypothesis | None] = []
    for got in assign_by_time([(p.start, p.end, p.text) for p in pieces], members):
        if got is None:
            out.append(None)
            continue
        lps = [lp for i in got for lp in pieces[i].logprobs]
        out.append(Hypothesis("".join(pieces[i].text for i in got).strip(),
                              avg_logprob=sum(lps) / len(lps) if lps else None))
    return out
