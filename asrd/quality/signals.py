"""All of a row's quality signals together: what the engine said of its segments, the text's
own signals, its language and, when the index has one, its error rate against the reference.

`SignalMaker.row` turns a finished row into the output's signal columns (asrd.schema
QUALITY_FIELDS) and its flags; it runs where rows are finished, once per row (about 0.3 ms, most
of it language ID).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from asrd.quality import hallucinations, reference, text
from asrd.quality.flags import LanguageRule, Thresholds, row_flags
from asrd.quality.langid import text_language_id


@dataclass(frozen=True)
class EngineSignals:
    """What the model said of a row (None where the engine does not say it)."""

    avg_logprob: float | None = None  # mean log-probability of its output tokens
    no_speech_prob: float | None = None  # Whisper's probability that there was no speech
    language: str | None = None  # the spoken language, by the model's own detection
    language_p: float | None = None
    expected_language_p: float | None = None  # its probability of the expected language

    @classmethod
    def of(cls, said: Any) -> "EngineSignals":
        """The signals of anything that carries them by these names (an engine's Hypothesis)."""
        return cls(said.avg_logprob, said.no_speech_prob, said.language, said.language_p,
                   said.expected_language_p)


def combine(parts: Sequence[tuple[EngineSignals, float, float]]) -> EngineSignals:
    """A row's engine signals from its segments' (signals, seconds, characters of text).

    The log-probability is averaged over characters (about over tokens, as the model averages
    it), the no-speech probability over seconds; the language is the one detected over most
    seconds, with those segments' mean confidence, and the expected language's mean
    probability over the same segments."""
    def weighted(values: list[tuple[float | None, float]]) -> float | None:
        known = [(v, w) for v, w in values if v is not None]
        total = sum(w for _, w in known)
        if not known:
            return None
        return sum(v * w for v, w in known) / total if total else sum(v for v, _ in known) / len(known)

    by_language: dict[str, list[tuple[EngineSignals, float]]] = {}
    for s, secs, _ in parts:
        if s.language:
            by_language.setdefault(s.language, []).append((s, secs))
    language = max(by_language, key=lambda k: sum(w for _, w in by_language[k]), default=None)
    chosen = by_language[language] if language else []
    return EngineSignals(
        avg_logprob=weighted([(s.avg_logprob, chars) for s, _, chars in parts]),
        no_speech_prob=weighted([(s.no_speech_prob, secs) for s, secs, _ in parts]),
        language=language,
        language_p=weighted([(s.language_p, secs) for s, secs in chosen]) if language else None,
        expected_language_p=weighted([(s.expected_language_p, secs) for s, secs in chosen])
        if language else None)


@dataclass(frozen=True)
class SignalSettings:
    """The `quality` config section, as plain values (it travels to actors)."""

    languages: tuple[str, ...]  # candidates of text language ID
    ngram: int
    thresholds: Thresholds
    language_rule: LanguageRule | None = None  # the language-ID pass's, when it runs

    @classmethod
    def of(cls, quality_cfg: Any, language_id: Any = None) -> "SignalSettings":
        return cls(tuple(str(x).lower() for x in quality_cfg.languages), int(quality_cfg.ngram),
                   Thresholds.of(quality_cfg.thresholds), LanguageRule.of(language_id))


class SignalMaker:
    """Computes rows' signals and flags; holds the language detector (built once)."""

    def __init__(self, settings: SignalSettings, default_language: str | None):
        self.settings = settings
        self.default_language = default_language
        self.langid = text_language_id(tuple(dict.fromkeys(
            settings.languages + ((default_language.lower(),) if default_language else ()))))

    def expected_language(self, row_language: str | None) -> str | None:
        return (row_language or self.default_language or None)

    def row(self, transcript: str, speech_s: float | None, engine: EngineSignals | None,
            ref: str | None, row_language: str | None) -> dict[str, Any]:
        """The signal columns of one ok row, `flags` included."""
        expected = self.expected_language(row_language)
        tokens = text.words(transcript)
        guess = self.langid.guess(transcript, expected) if tokens else None
        scores = reference.score(transcript, ref, expected) if isinstance(ref, str) else None
        e = engine or EngineSignals()
        s: dict[str, Any] = {
            "avg_logprob": e.avg_logprob, "no_speech_prob": e.no_speech_prob,
            "audio_language": e.language, "audio_language_p": e.language_p,
            "audio_expected_p": e.expected_language_p,
            "text_language": guess.language if guess else None,
            "text_language_p": guess.p if guess else None,
            "text_expected_p": guess.expected_p if guess else None,
            "num_words": len(tokens),
            "compression_ratio": text.compression_ratio(transcript),
            "ngram_repeats": text.max_ngram_repeats(tokens, self.settings.ngram),
            "unique_word_share": text.unique_word_share(tokens),
            "longest_word": text.longest_word(tokens),
            "chars_per_s": text.per_second(len(transcript), speech_s),
            "words_per_s": text.per_second(len(tokens), speech_s),
            "hallucination": hallucinations.match(
                transcript, [x for x in (expected, "en") if x]),
            "wer": scores.wer if scores else None, "cer": scores.cer if scores else None,
        }
        s["flags"] = row_flags(s, self.settings.thresholds, expected, self.settings.language_rule)
        return s
