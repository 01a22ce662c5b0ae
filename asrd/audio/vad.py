"""Voice activity detection: where the speech is, so that silence, noise and tones never reach
the model (Whisper writes words on them: "you you you" on a minute of silence).

Silero VAD (ONNX, on onnxruntime, one CPU thread), the model file inside the faster-whisper wheel
(nothing is downloaded). `SpeechRegions` is faster-whisper's `get_speech_timestamps` (find speech
regions, pad them, split any longer than the model's window at a pause) made incremental: audio is
fed in blocks and each region is handed out as soon as no later audio can change it, so a
recording of hours is searched while holding a few seconds of it. The model carries its state
from window to window exactly as faster-whisper's whole-array call does, so the regions are the
same, sample for sample (tests/test_segment.py compares them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VAD_SAMPLE_RATE = 16000  # Silero's rate here; decode resamples to it
WINDOW = 512  # samples per speech probability
CONTEXT = 64  # samples of the previous window the model sees with each window
MODEL_BATCH = 1024  # windows per model call (the probabilities do not depend on it)
SPLIT_SILENCE_MS = 98  # a pause this long is where a region over the window's length is split


class VadUnavailable(RuntimeError):
    """The VAD model cannot be loaded here; the message says what to install."""


@dataclass(frozen=True)
class VadSettings:
    threshold: float = 0.5  # speech probability above which a frame is speech
    min_speech_ms: int = 250  # shorter speech is dropped (clicks, coughs)
    min_silence_ms: int = 500  # a pause at least this long ends a speech region
    speech_pad_ms: int = 300  # kept on each side of a region, so that word edges stay


def check_available() -> None:
    """Fail early, in the driver, rather than as an error on every row."""
    try:
        from faster_whisper.vad import get_vad_model

        get_vad_model()
    except Exception as e:  # ImportError, or onnxruntime failing to load the model
        raise VadUnavailable(f"voice activity detection needs faster-whisper and onnxruntime "
                             f"(pip install faster-whisper): {type(e).__name__}: {e}") from None


def speech_regions(audio: np.ndarray, settings: VadSettings, max_region_s: float
                   ) -> list[tuple[int, int]]:
    """Speech regions of 16 kHz mono `audio`, as (start, end) sample offsets, in order, none
    longer than `max_region_s`."""
    vad = SpeechRegions(settings, max_region_s)
    return vad.feed(audio) + vad.finish()


class _Probabilities:
    """Silero's speech probability per 512-sample window of a stream, the model's recurrent
    state and each window's 64 samples of context carried from call to call."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self.session = get_vad_model().session
        self.h = np.zeros((1, 1, 128), dtype=np.float32)
        self.c = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros((1, CONTEXT), dtype=np.float32)
        self.rest = np.zeros(0, dtype=np.float32)  # fewer samples than a window, not yet scored

    def feed(self, audio: np.ndarray) -> np.ndarray:
        x = np.concatenate([self.rest, audio.astype(np.float32, copy=False)])
        n = len(x) // WINDOW * WINDOW
        self.rest = x[n:].copy()
        return self._score(x[:n].reshape(-1, WINDOW))

    def finish(self) -> np.ndarray:
        """The last window: the rest padded with zeros (a whole window of zeros when there is no
        rest), its last 64 samples zeroed, as faster-whisper's model call does."""
        last = np.zeros((1, WINDOW), dtype=np.float32)
        last[0, :len(self.rest)] = self.rest
        last[0, -CONTEXT:] = 0
        self.rest = np.zeros(0, dtype=np.float32)
        return self._score(last)

    def _score(self, windows: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(windows), MODEL_BATCH):
            batch = windows[i:i + MODEL_BATCH]
            context = np.concatenate([self.context, batch[:-1, -CONTEXT:]])
            self.context = batch[-1:, -CONTEXT:].copy()
            probs, self.h, self.c = self.session.run(
                None, {"input": np.concatenate([context, batch], axis=1), "h": self.h,
                       "c": self.c})
            out.append(probs.reshape(-1))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


class SpeechRegions:
    """Speech regions of a 16 kHz stream, each handed out once no later audio can change it.

    The state machine over the probabilities is faster-whisper's `get_speech_timestamps` (same
    thresholds, same splitting of long regions, same padding), step for step; what is new is only
    when a region is final: its padded end depends on where the next region starts, so a region
    is held until that start is known or is at least two paddings away."""

    def __init__(self, settings: VadSettings, max_region_s: float):
        sr = VAD_SAMPLE_RATE
        self.threshold = settings.threshold
        self.neg_threshold = max(settings.threshold - 0.15, 0.01)
        self.min_speech = sr * settings.min_speech_ms / 1000
        self.pad = sr * settings.speech_pad_ms / 1000
        self.max_speech = sr * max_region_s - WINDOW - 2 * self.pad
        self.min_silence = sr * settings.min_silence_ms / 1000
        self.min_silence_at_max = sr * SPLIT_SILENCE_MS / 1000
        self.probs = _Probabilities()
        self.frames = 0  # probabilities seen
        self.samples = 0  # audio fed
        self.triggered = False
        self.start: int | None = None  # the region being heard (unpadded start)
        self.temp_end = self.prev_end = self.next_start = 0
        self.held: list[list[int]] = []  # unpadded regions whose padded end is not known yet
        self.last_end: int | None = None  # the unpadded end of the last region handed out

    def feed(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """Regions made final by this block of audio."""
        self.samples += len(audio)
        self._step(self.probs.feed(audio))
        return self._release(final=False)

    def finish(self) -> list[tuple[int, int]]:
        """The remaining regions, at the end of the recording."""
        self._step(self.probs.finish())
        if self.start is not None and self.samples - self.start > self.min_speech:
            self.held.append([self.start, self.samples])
        self.start = None
        return self._release(final=True)

    @property
    def settled(self) -> int:
        """No region handed out later starts before this sample."""
        if self.held:
            return self._padded_start(0)
        first = self.start if self.start is not None else self.frames * WINDOW
        return max(0, int(first - self.pad))

    def _step(self, probs: np.ndarray) -> None:
        for p in probs.tolist():
            self._frame(p, WINDOW * self.frames)
            self.frames += 1

    def _frame(self, p: float, at: int) -> None:
        """One probability, as in `get_speech_timestamps` (`start` is its `current_speech`)."""
        if p >= self.threshold and self.temp_end:
            self.temp_end = 0
            if self.next_start < self.prev_end:
                self.next_start = at
        if p >= self.threshold and not self.triggered:
            self.triggered, self.start = True, at
            return
        if self.triggered and self.start is not None and at - self.start > self.max_speech:
            if self.prev_end:
                self.held.append([self.start, self.prev_end])
                if self.next_start < self.prev_end:
                    self.triggered, self.start = False, None
                else:
                    self.start = self.next_start
                self.prev_end = self.next_start = self.temp_end = 0
            else:
                self.held.append([self.start, at])
                self.start = None
                self.prev_end = self.next_start = self.temp_end = 0
                self.triggered = False
                return
        if p < self.neg_threshold and self.triggered:
            if not self.temp_end:
                self.temp_end = at
            if at - self.temp_end > self.min_silence_at_max:
                self.prev_end = self.temp_end
            if at - self.temp_end < self.min_silence:
                return
            if self.start is not None and self.temp_end - self.start > self.min_speech:
                self.held.append([self.start, self.temp_end])
            self.start = None
            self.prev_end = self.next_start = self.temp_end = 0
            self.triggered = False

    def _padded_start(self, k: int) -> int:
        start = self.held[k][0]
        if self.last_end is None and k == 0:
            return int(max(0, start - self.pad))
        before = self.held[k - 1][1] if k else self.last_end
        gap = start - before
        return int(max(0, start - (gap // 2 if gap < 2 * self.pad else self.pad)))

    def _release(self, final: bool) -> list[tuple[int, int]]:
        """Padded regions whose end is known: the next region's start is known, or no later
        region can start within two paddings of its end (or the recording ended)."""
        out = []
        while self.held:
            start, end = self.held[0]
            if len(self.held) > 1:
                gap = self.held[1][0] - end
                padded_end = end + int(gap // 2) if gap < 2 * self.pad else int(end + self.pad)
            else:
                earliest = self.start if self.start is not None else self.frames * WINDOW
                if not final and earliest - end < 2 * self.pad:
                    break
                padded_end = int(min(self.samples, end + self.pad)) if final else int(end + self.pad)
            out.append((self._padded_start(0), padded_end))
            self.last_end = end
            self.held.pop(0)
        return out
