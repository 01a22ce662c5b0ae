"""The quality thresholds: where each flag trips. The config's `quality.thresholds` section is
this record, and presets carry their own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Thresholds:
    """Where each quality flag trips (asrd.quality.flags); merge applies them again to the stored
    signals, so they may change at merge time. Defaults: the peers' values, and for short texts
    measured (bench/bench_quality.py)."""

    max_compression_ratio: float = 2.4  # compression: zlib ratio above this (a loop)
    max_ngram_repeats: int = 3  # repeats: some n-gram (quality.ngram words) more often
    max_unique_word_share: float = 0.4  # few_unique_words: distinct/all words at most this ...
    unique_words_min_words: int = 10  # ... in a text of at least this many words
    long_word_chars: int = 25  # long_word: a word of at least this many characters
    max_chars_per_s: float = 40.0  # too_fast: characters per second of detected speech
    min_avg_logprob: float = -1.0  # low_logprob: the model's average token log-probability
    min_avg_logprob_short: float = -1.0  # ... below this in a text of fewer than short_text_words
    short_text_words: int = 6  # ... words (a mean over few tokens is noisy)
    max_no_speech_prob: float = 0.6  # no_speech: the model's no-speech probability above this
    language_min_words: int = 6  # text_other_language: only texts of at least this many words
    text_language_margin: float = 0.5  # ... another language's confidence over the expected one's
    spoken_language_margin: float = 0.2  # spoken_other_language: Whisper's, likewise
    unsure_max_logprob: float = -0.65  # unsure_short_text: a text under short_text_words words
    unsure_max_expected_p: float = 0.6  # ... below both this log-prob and this spoken-language p
    max_reference_wer: float = 0.75  # reference_wer: WER against the reference at least this
    max_reference_cer: float = 0.30  # reference_cer: CER against the reference at least this

    @classmethod
    def of(cls, values: Any) -> "Thresholds":
        """From the config section (or any mapping with these keys)."""
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})
