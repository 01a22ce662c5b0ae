"""Second tries for long segments the model failed on.

Whisper sometimes gives up on a long window full of speech: it writes nothing, or loops and
writes a repeated sentence once where it was said eight times (measured with Whisper-base on one
sentence said 40 times: 28 repeats come out of 30 s segments, all 40 with this second try; on
varied speech, 10 s segments from the start cost 5.5 points of WER, so they are not the
default). A
segment whose text shows such a failure is cut again, shorter, and transcribed again, once: the
row goes back to decode with `audio.retry_segment_s` as its longest segment.

The signs are Whisper's own fallback tests: text that compresses more than 2.4 times with zlib
(a loop), or almost no text for many seconds of detected speech.
"""

from __future__ import annotations

from asrd.quality.text import compression_ratio
from asrd.runtime.records import RowResult

LOOP_COMPRESSION = 2.4  # Whisper's compression_ratio_threshold
MIN_CHARS_PER_S = 1.0  # normal speech is 10-20 characters a second (CJK about 5)


def looks_failed(text: str, seconds: float, retry_s: float) -> bool:
    """Whether a segment of `seconds` longer than `retry_s` reads like a failed transcription."""
    if retry_s <= 0 or seconds <= retry_s:
        return False
    text = text.strip()
    if len(text) < MIN_CHARS_PER_S * seconds:  # nothing, or almost nothing (never empty below)
        return True
    return (compression_ratio(text) or 0.0) > LOOP_COMPRESSION


def needs_retry(row: RowResult, retry_s: float) -> bool:
    """Whether a finished row has a segment to cut again (packed clips are short: never)."""
    return bool(row.ok and row.segments and row.pack_window is None and any(
        looks_failed(s.text, s.end - s.start, retry_s) for s in row.segments))
