"""Quality flags: which thresholds a row's signals cross. A pure function of the stored signals
and the thresholds, so that `asrd merge` can apply other thresholds without rerunning anything.

The defaults are those of the peers that build such corpora at scale (NeMo Curator / Granary,
OWSM): see the README's output schema for each flag. Against a reference transcript the default
judges by CER (30%) and by WER only at 75%: one wrong or split word ("sea shore" for
"seashore") in an eight-word sentence is already 12% WER but 3% CER, while a sentence cut
mid-word loses a third or more of its characters. distil-whisper's 10% WER is the `strict`
preset, for a strong model's labels.

Short texts are judged by what holds on them (measured in bench/bench_quality.py): text language
ID only from `language_min_words` words up (below that lingua reads "Open the door." as Dutch at
0.98), a looser log-probability floor below `short_text_words` words (a mean over three tokens is
noisy), and the language flags by margins (the other language's probability above the expected
one's), so a right but unsure detection ("London Bridge": English at 0.64) is no flag. On a short
text neither the words' log-probability nor the spoken language alone separates a right label
from another language transcribed as English (Whisper-base calls espeak's "Komm bitte her."
English), but the two together do: `unsure_short_text` trips where both are unsure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from asrd.quality.thresholds import Thresholds

__all__ = ["FLAGS", "RENAMED_FLAGS", "LanguageRule", "Thresholds", "row_flags"]

FLAGS = ("empty", "compression", "repeats", "few_unique_words", "long_word", "too_fast",
         "low_logprob", "no_speech", "hallucination", "text_other_language",
         "spoken_other_language", "unsure_short_text", "reference_wer", "reference_cer",
         "unwanted_language", "unsure_language")

# flags of earlier versions, whose rules changed with their names (merge computes flags again,
# so old shard files get the new ones)
RENAMED_FLAGS = {"text_language": "text_other_language", "audio_language": "spoken_other_language"}


@dataclass(frozen=True)
class LanguageRule:
    """What the language-ID pass wants (the `language_id` section): a row whose identified
    spoken language (`audio_language`) is not among `languages` is `unwanted_language`, one
    identified below `min_p` is `unsure_language`."""

    languages: frozenset[str]  # empty: every language is wanted
    min_p: float

    @classmethod
    def of(cls, language_id: Any) -> "LanguageRule | None":
        """The rule of a `language_id` config section; None when the pass is off."""
        if language_id is None or not language_id.enabled:
            return None
        return cls(frozenset(str(x).lower() for x in language_id.languages),
                   float(language_id.min_p))


def row_flags(s: Mapping[str, Any], t: Thresholds, expected_language: str | None,
              rule: LanguageRule | None = None) -> list[str]:
    """The flags an ok row trips, in FLAGS order. `s`: the row's signal columns (asrd.schema);
    `expected_language`: the row's or the run's language (None: language flags are off);
    `rule`: the language-ID pass's (None: it did not run, its flags are off)."""
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
    if under("avg_logprob", t.min_avg_logprob if n_words >= t.short_text_words
             else t.min_avg_logprob_short):
        out.append("low_logprob")
    if over("no_speech_prob", t.max_no_speech_prob):
        out.append("no_speech")
    if s.get("hallucination"):
        out.append("hallucination")
    if expected_language and n_words >= t.language_min_words and other_language(
            s.get("text_language"), s.get("text_language_p"), s.get("text_expected_p"),
            expected_language) >= t.text_language_margin:
        out.append("text_other_language")
    if expected_language and other_language(
            s.get("audio_language"), s.get("audio_language_p"), s.get("audio_expected_p"),
            expected_language) >= t.spoken_language_margin:
        out.append("spoken_other_language")
    spoken_p = expected_p(s, expected_language) if expected_language else None
    if (0 < n_words < t.short_text_words and under("avg_logprob", t.unsure_max_logprob)
            and spoken_p is not None and spoken_p < t.unsure_max_expected_p):
        out.append("unsure_short_text")
    if s.get("wer") is not None and s["wer"] >= t.max_reference_wer:
        out.append("reference_wer")
    if s.get("cer") is not None and s["cer"] >= t.max_reference_cer:
        out.append("reference_cer")
    if rule is not None and rule.languages and s.get("audio_language") and (
            s["audio_language"] not in rule.languages):
        out.append("unwanted_language")
    if rule is not None and under("audio_language_p", rule.min_p):
        out.append("unsure_language")
    return out


def other_language(top: str | None, top_p: float | None, expected_p: float | None,
                   expected: str) -> float:
    """By how much the detected language's probability exceeds the expected language's; 0 when
    the detected one is the expected one, or nothing was detected. Without the expected
    language's probability (shard files written before it was stored, engines that do not say
    it) the margin is its lower bound: the probabilities sum to 1, so expected_p <= 1 - top_p."""
    if not top or top_p is None or top == expected.lower():
        return 0.0
    return top_p - (expected_p if expected_p is not None else 1.0 - top_p)


def expected_p(s: Mapping[str, Any], expected: str) -> float | None:
    """Whisper's probability that the audio is in the expected language; None where the
    language was not detected (or, in a shard file written before it was stored, another
    language was)."""
    if s.get("audio_expected_p") is not None:
        return s["audio_expected_p"]
    return s.get("audio_language_p") if s.get("audio_language") == expected.lower() else None
