"""Word and character error rate of a transcript against a reference transcript (a manifest's
`text`), after Whisper's own normaliser, so that casing, punctuation and spelling variants
("Mr." / "mister", "colour" / "color", numbers) do not count as errors."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ReferenceScores:
    wer: float
    cer: float


@functools.lru_cache(maxsize=8)
def normaliser(language: str | None) -> Callable[[str], str]:
    """Whisper's English normaliser for English, its basic one (case, punctuation, symbols)
    for any other language."""
    from whisper_normalizer.basic import BasicTextNormalizer
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer() if language in (None, "en") else BasicTextNormalizer()


def score(hypothesis: str, reference: str, language: str | None) -> ReferenceScores | None:
    """WER and CER after normalising both; None when the normalised reference is empty (no
    rate exists: the row says nothing against it)."""
    import jiwer

    norm = normaliser(language)
    ref, hyp = " ".join(norm(reference).split()), " ".join(norm(hypothesis).split())
    if not ref:
        return None
    if not hyp:
        return ReferenceScores(1.0, 1.0)
    return ReferenceScores(float(jiwer.wer(ref, hyp)), float(jiwer.cer(ref, hyp)))
