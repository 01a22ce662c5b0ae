"""Cutting decoded audio into model inputs of at most the engine's window.

With voice activity detection (the default) the inputs are the speech: speech regions, merged in
order into spans of at most the window, silence between them kept only inside a span; a recording
with no speech gives no input at all. Without it, the recording is cut at the quietest frame
before each window limit.

Both cutters take the audio in blocks and hand out each span once it is final, so a long
recording is cut while it is decoded (`SegmentStream`), holding about one window of it; a whole
array is one block (`segment`), with the same spans.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Protocol

import numpy as np

from asrd.audio.decode import Source, decode_blocks
from asrd.audio.vad import SpeechRegions, VadSettings


@dataclass(frozen=True)
class Segmentation:
    spans: list[tuple[int, int]]  # the model inputs, as sample offsets in the recording
    speech_s: float  # seconds of detected speech (the whole recording without VAD)


class Cutter(Protocol):
    def feed(self, audio: np.ndarray) -> list[tuple[int, int]]: ...

    def finish(self) -> list[tuple[int, int]]: ...

    @property
    def needed_from(self) -> int:
        """No span handed out later starts before this sample."""

    @property
    def speech_samples(self) -> int: ...


def cutter(sr: int, max_s: float, vad: VadSettings | None) -> Cutter:
    return SpeechSpans(sr, max_s, vad) if vad is not None else QuietCuts(sr, max_s)


def segment(audio: np.ndarray, sr: int, max_s: float, vad: VadSettings | None) -> Segmentation:
    """The model inputs of a decoded recording."""
    cut = cutter(sr, max_s, vad)
    spans = cut.feed(audio) + cut.finish()
    return Segmentation(spans, cut.speech_samples / sr)


def merge_regions(regions: list[tuple[int, int]], max_len: int) -> list[tuple[int, int]]:
    """Consecutive regions joined while the joined span stays within `max_len` samples (each
    region is at most that long already)."""
    spans: list[tuple[int, int]] = []
    for a, b in regions:
        if spans and b - spans[-1][0] <= max_len:
            spans[-1] = (spans[-1][0], b)
        else:
            spans.append((a, b))
    return spans


class SpeechSpans:
    """Speech regions merged into spans of at most `max_s`. The last span may still grow until
    the next region is found or no later region can fit in it."""

    def __init__(self, sr: int, max_s: float, vad: VadSettings):
        self.regions = SpeechRegions(vad, max_s)
        self.max_len = int(max_s * sr)
        self.span: tuple[int, int] | None = None
        self.speech_samples = 0

    def feed(self, audio: np.ndarray) -> list[tuple[int, int]]:
        return self._merge(self.regions.feed(audio), final=False)

    def finish(self) -> list[tuple[int, int]]:
        return self._merge(self.regions.finish(), final=True)

    @property
    def needed_from(self) -> int:
        return self.span[0] if self.span else self.regions.settled

    def _merge(self, regions: list[tuple[int, int]], final: bool) -> list[tuple[int, int]]:
        self.speech_samples += sum(b - a for a, b in regions)
        spans = merge_regions(([self.span] if self.span else []) + regions, self.max_len)
        self.span = spans.pop() if spans else None
        if self.span and (final or self.regions.settled >= self.span[0] + self.max_len):
            spans.append(self.span)
            self.span = None
        return spans


class QuietCuts:
    """Spans of at most `max_s`, each cut at the quietest frame of the last `search_s` before the
    limit, so cuts fall in pauses rather than mid-word where possible."""

    def __init__(self, sr: int, max_s: float, search_s: float = 5.0, frame_s: float = 0.05):
        self.limit = int(max_s * sr)
        self.frame = max(1, int(frame_s * sr))
        self.search = int(min(search_s, max_s / 2) * sr)
        self.start = 0  # where the current span starts
        self.tail = np.zeros(0, dtype=np.float32)  # the audio from `start` on
        self.speech_samples = 0  # all of it: without VAD everything is kept

    @property
    def needed_from(self) -> int:
        return self.start

    def feed(self, audio: np.ndarray) -> list[tuple[int, int]]:
        self.speech_samples += len(audio)
        self.tail = np.concatenate([self.tail, audio]) if len(self.tail) else audio
        spans = []
        while len(self.tail) > self.limit:
            lo = self.limit - self.search
            window = self.tail[lo:self.limit]
            usable = len(window) // self.frame * self.frame
            if usable:
                energy = np.square(window[:usable].reshape(-1, self.frame)).mean(axis=1)
                cut = lo + int(np.argmin(energy)) * self.frame + self.frame // 2
            else:
                cut = self.limit
            spans.append((self.start, self.start + cut))
            self.start += cut
            self.tail = self.tail[cut:]
        return spans

    def finish(self) -> list[tuple[int, int]]:
        return [(self.start, self.start + len(self.tail))]


def split_points(audio: np.ndarray, sr: int, max_s: float, search_s: float = 5.0,
                 frame_s: float = 0.05) -> list[tuple[int, int]]:
    """Cut `audio` into spans of at most `max_s` at the quietest frames (see `QuietCuts`)."""
    cuts = QuietCuts(sr, max_s, search_s, frame_s)
    return cuts.feed(audio) + cuts.finish()


@dataclass(frozen=True)
class Cut:
    """One model input of a streamed recording."""

    index: int  # its position among the recording's inputs
    start: int  # sample offsets in the recording
    end: int
    audio: np.ndarray


class SegmentStream:
    """A recording's model inputs, found while it is decoded: memory holds the audio of the span
    being built (at most a window) and one decode block, not the recording. After iteration,
    `duration_s` and `speech_s` describe the whole recording."""

    def __init__(self, src: Source, sr: int, max_s: float, vad: VadSettings | None,
                 max_duration_s: float | None = None):
        self.src, self.sr, self.max_s, self.vad = src, sr, max_s, vad
        self.max_duration_s = max_duration_s
        self.duration_s: float | None = None
        self.speech_s: float | None = None

    def __iter__(self) -> Iterator[Cut]:
        cut = cutter(self.sr, self.max_s, self.vad)
        buffer, at, n, index = np.zeros(0, dtype=np.float32), 0, 0, 0  # `at`: buffer's offset
        for block in decode_blocks(self.src, self.sr, self.max_duration_s):
            n += len(block)
            buffer = np.concatenate([buffer, block]) if len(buffer) else block
            for a, b in cut.feed(block):
                yield Cut(index, a, b, buffer[a - at:b - at].copy())
                index += 1
            keep = max(at, min(cut.needed_from, n))
            buffer, at = buffer[keep - at:], keep
        for a, b in cut.finish():
            yield Cut(index, a, b, buffer[a - at:b - at].copy())
            index += 1
        self.duration_s, self.speech_s = n / self.sr, cut.speech_samples / self.sr
