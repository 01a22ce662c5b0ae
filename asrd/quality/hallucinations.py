"""Phrases that Whisper-style models are known to write on silence, music or noise (learned
from subtitled video), one file per language in `hallucinations/<lang>.txt`, shipped as data.

A phrase of three words or more matches anywhere in a text ("subtitles by the amara.org
community"); a shorter one ("you", "thank you") only when it is the whole text, since it is
also ordinary speech.
"""

from __future__ import annotations

import functools
from importlib import resources

from asrd.quality.text import words

MIN_WORDS_ANYWHERE = 3


@functools.lru_cache(maxsize=None)
def phrases(language: str) -> tuple[tuple[str, ...], ...]:
    """The language's phrases as word tuples (empty when no list ships for it)."""
    path = resources.files("asrd.quality") / "hallucinations" / f"{language}.txt"
    if not path.is_file():
        return ()
    lines = (line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines())
    return tuple(dict.fromkeys(tuple(words(line)) for line in lines if words(line)))


def match(text: str, languages: list[str]) -> str | None:
    """The first known phrase (of these languages' lists) the text holds, as words; or None."""
    tokens = tuple(words(text))
    if not tokens:
        return None
    for lang in dict.fromkeys(languages):
        for phrase in phrases(lang):
            if tokens == phrase:
                return " ".join(phrase)
            if len(phrase) >= MIN_WORDS_ANYWHERE and _contains(tokens, phrase):
                return " ".join(phrase)
    return None


def _contains(tokens: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(tokens[i:i + n] == phrase for i in range(len(tokens) - n + 1))
