"""Signals of a transcript's text alone: cheap, language-independent checks that catch the
usual failures of a sequence-to-sequence ASR model (loops, run-on garbage, text on silence)."""

from __future__ import annotations

import collections
import re
import zlib

_WORD = re.compile(r"\w+(?:['’]\w+)*")


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation."""
    return [w.lower() for w in _WORD.findall(text)]


def compression_ratio(text: str) -> float | None:
    """UTF-8 bytes over zlib-compressed bytes, as Whisper computes it: a looping text
    compresses well (Whisper's own fallback threshold is 2.4)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else None


def max_ngram_repeats(tokens: list[str], n: int) -> int:
    """How often the most frequent n-gram occurs (0 when the text is shorter than n)."""
    if len(tokens) < n:
        return 0
    counts = collections.Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return max(counts.values())


def unique_word_share(tokens: list[str]) -> float | None:
    """Distinct words over words: low for a text that says the same few words again and again."""
    return len(set(tokens)) / len(tokens) if tokens else None


def longest_word(tokens: list[str]) -> int:
    """Characters of the longest word: run-on garbage has words no language has."""
    return max((len(w) for w in tokens), default=0)


def per_second(count: int, speech_s: float | None) -> float | None:
    """A count per second of detected speech; None when there was none."""
    return count / speech_s if speech_s else None
