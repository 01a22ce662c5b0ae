"""Quality flags: which thresholds a row's signals cross. A pure function of the stored signals
and the thresholds, so that `asrd merge` can apply other thresholds without rerunning anything.

The defaults are those of the peers that build such corpora at scale (NeMo Curator / Granary,
OWSM): see the README's output schema for each flag. Against a reference transcript the default
judges by CER (30%) and by WER only at 75%: one wrong or split word ("sea shore" for
"seashore") in an eight-word sentence is already 12% WER but 3% CER, while a sentence cut
mid-word loses a third or more of its characters. distil-whisper's 10% WER is the `strict`
preset, for a strong model's labels.
"""

from __future__ import annotations

from typing import Any, Mapping

from asrd.config import Thresholds

__all__ = ["FLAGS", "Thresholds", "row_flags"]

FLAGS = ("empty", "compression", "repeats", "few_unique_words", "long_word", "too_fast",
         "low_logprob", "no_speech", "hallucination", "text_language", "audio_language",
         "reference_wer", "reference_cer")


def row_flags(s: Mapping[str, Any], t: Thresholds, expected_language: str | None) -> list[str]:
    """The flags an ok row trips, in FLAGS order. `s`: the row's signal columns (asrd.schema);
    `expected_language`: the row's or the run's language (None: language flags are off)."""
    n_words = s.get("num_words") or 0
    out: list[str] = []

    def over(key: str, limit: float) -> bool:
        return s.get(key) is not None and s[key] > limit

    def under(key: str, limit: float) -> bool:
        return s.get(key) is not None and s[key] < limit

    if n_words == 0:
        out.append("empty")
    if over("compression_ratio", t.max_compression_ratio):
        out.append("compression")
    if over("ngram_repeats", t.max_ngram_repeats):
        out.append("repeats")
    if (n_words >= t.unique_words_min_words and s.get("unique_word_share") is not None
            and s["unique_word_share"] <= t.max_unique_word_share):
        out.append("few_unique_words")
    if (s.get("longest_word") or 0) >= t.long_word_chars:
        out.append("long_word")
    if over("chars_per_s", t.max_chars_per_s):
        out.append("too_fast")
    if under("avg_logprob", t.min_avg_logprob):
        out.append("low_logprob")
    if over("no_speech_prob", t.max_no_speech_prob):
        out.append("no_speech")
    if s.get("hallucination"):
        out.append("hallucination")
    if expected_language and n_words >= t.language_min_words and not _agrees(
            s.get("text_language"), s.get("text_language_p"), expected_language, t):
        out.append("text_language")
    if expected_language and s.get("audio_language") and not _agrees(
            s.get("audio_language"), s.get("audio_language_p"), expected_language, t):
        out.append("audio_language")
    if s.get("wer") is not None and s["wer"] >= t.max_reference_wer:
        out.append("reference_wer")
    if s.get("cer") is not None and s["cer"] >= t.max_reference_cer:
        out.append("reference_cer")
    return out


def _agrees(language: str | None, p: float | None, expected: str, t: Thresholds) -> bool:
    return language == expected.lower() and p is not None and p >= t.min_language_p
