"""Voice activity detection: where the speech is, so that silence, noise and tones never reach
the model (Whisper writes words on them: "you you you" on a minute of silence).

Silero VAD (ONNX, on onnxruntime, one CPU thread), as faster-whisper ships and runs it: its
`get_speech_timestamps` finds speech regions, pads them, and splits any longer than the model's
window at a pause. Nothing is downloaded: the model file is inside the faster-whisper wheel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

VAD_SAMPLE_RATE = 16000  # Silero's rate here; decode resamples to it


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
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    options = VadOptions(threshold=settings.threshold,
                         min_speech_duration_ms=settings.min_speech_ms,
                         min_silence_duration_ms=settings.min_silence_ms,
                         speech_pad_ms=settings.speech_pad_ms,
                         max_speech_duration_s=max_region_s)
    found = get_speech_timestamps(audio, options, sampling_rate=VAD_SAMPLE_RATE)
    return [(int(t["start"]), int(t["end"])) for t in found]
