"""Audio in: probe headers, decode any common format, downmix and resample to 16 kHz mono.

libsndfile (through soundfile) decodes WAV, FLAC, OGG/Opus and MP3 fast; anything it rejects (M4A,
AAC, WebM) goes through FFmpeg's libraries via PyAV. Resampling is soxr's HQ filter. We chose these
over torchaudio: its `load` moved to TorchCodec in 2.9 and torchaudio is in maintenance, and
soundfile + soxr decode 300-3000x real time per core (bench/RESULTS.md).
Recordings are read in blocks and resampled as a stream (`decode_blocks`), so a 3-hour 48 kHz
stereo file never sits in memory at its source rate, and a long one need not sit in memory at all.

Every failure is an `AudioError` whose `reason` is a short stable category (the part before the
colon in the output row's `error`), so failures can be counted by reason.
"""

from __future__ import annotations

import io
import os
import stat
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import soundfile as sf
import soxr

BLOCK_S = 10.0  # seconds of source audio per block (the resampled output does not depend on it)


class AudioError(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class AudioInfo:
    duration_s: float
    sample_rate: int
    channels: int
    num_bytes: int


Source = str | bytes  # a path on the store, or the audio file's bytes (Parquet-embedded)


def _check_readable(src: Source) -> int:
    """Size in bytes; turns the common file-system failures into clear reasons."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) == 0:
            raise AudioError("empty file", "0 bytes of embedded audio")
        return len(src)
    try:
        st = os.stat(src)
        if not stat.S_ISREG(st.st_mode):  # opening a FIFO or a device could block forever
            raise AudioError("unreadable", f"{src} is not a regular file ({_file_kind(st)})")
        size = st.st_size
        if not os.access(src, os.R_OK):
            raise PermissionError(src)
        with open(src, "rb"):
            pass
    except FileNotFoundError:
        raise AudioError("missing file", str(src)) from None
    except PermissionError:
        raise AudioError("unreadable", f"permission denied: {src}") from None
    except OSError as e:
        raise AudioError("unreadable", f"{src}: {e.strerror or e}") from None
    if size == 0:
        raise AudioError("empty file", f"0 bytes: {src}")
    return size


def _file_kind(st: os.stat_result) -> str:
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]
    return next((name for test, name in kinds if test(st.st_mode)), "not a plain file")


def _open(src: Source):
    return io.BytesIO(src) if isinstance(src, (bytes, bytearray, memoryview)) else src


def probe(src: Source) -> AudioInfo:
    """Duration, rate and channels from the header (no full decode where the format allows)."""
    size = _check_readable(src)
    try:
        info = sf.info(_open(src))
        if info.frames <= 0 and info.duration <= 0:
            raise AudioError("no audio samples", "the file holds 0 samples")
        return AudioInfo(float(info.duration), int(info.samplerate), int(info.channels), size)
    except sf.LibsndfileError:
        pass
    return _probe_av(src, size)


def _probe_av(src: Source, size: int) -> AudioInfo:
    import av

    try:
        with av.open(_open(src)) as container:
            if not container.streams.audio:
                raise AudioError("corrupt audio", "no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate or 0)
            channels = int(stream.codec_context.channels or 0)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000
            else:  # no duration in the header: count the decoded samples
                duration = sum(f.samples for f in container.decode(stream)) / max(rate, 1)
    except AudioError:
        raise
    except Exception as e:  # PyAV raises many types (InvalidDataError, ValueError, ...)
        raise AudioError("corrupt audio", f"cannot read as audio ({type(e).__name__}: {e})") from None
    if duration <= 0 or rate <= 0:
        raise AudioError("no audio samples", "the file holds 0 samples")
    return AudioInfo(duration, rate, channels, size)


def decode(src: Source, target_sr: int = 16000, max_duration_s: float | None = None) -> np.ndarray:
    """The whole recording as float32 mono at `target_sr`."""
    blocks = list(decode_blocks(src, target_sr, max_duration_s))
    return np.ascontiguousarray(np.concatenate(blocks), dtype=np.float32)


def decode_blocks(src: Source, target_sr: int = 16000, max_duration_s: float | None = None
                  ) -> Iterator[np.ndarray]:
    """The recording as consecutive float32 mono blocks at `target_sr`, decoded and resampled
    as they are read (about `BLOCK_S` each), so that a long recording never sits in memory."""
    _check_readable(src)
    try:
        f = sf.SoundFile(_open(src))
    except sf.LibsndfileError:
        blocks = _decode_av(src, target_sr, max_duration_s)
    else:
        blocks = _decode_sf(f, target_sr, max_duration_s)
    n = 0
    for block in blocks:
        if len(block):
            n += len(block)
            yield block
    if n == 0:
        raise AudioError("no audio samples", "the file holds 0 samples")


def _check_length(duration_s: float, max_duration_s: float | None) -> None:
    if max_duration_s is not None and duration_s > max_duration_s:
        raise AudioError("too long", f"{duration_s:.0f} s > audio.max_duration_s={max_duration_s:.0f}")


def _decode_sf(f: sf.SoundFile, target_sr: int, max_duration_s: float | None
               ) -> Iterator[np.ndarray]:
    with f:
        _check_length(f.frames / f.samplerate if f.frames > 0 else 0.0, max_duration_s)
        resampler = None if f.samplerate == target_sr else soxr.ResampleStream(
            f.samplerate, target_sr, 1, dtype="float32", quality="HQ")
        block = max(1, int(BLOCK_S * f.samplerate))
        n = 0
        while True:
            try:
                x = f.read(block, dtype="float32", always_2d=True)
            except sf.LibsndfileError as e:
                raise AudioError("corrupt audio", f"decode failed after {n} samples: {e}") from None
            last = len(x) < block
            mono = downmix(x)
            out = resampler.resample_chunk(mono, last=last) if resampler else mono
            n += len(out)
            yield np.ascontiguousarray(out, dtype=np.float32)
            if last:
                return


SEQUENTIAL_MEAN_CHANNELS = 8  # below this, numpy's mean adds the channels in order


def downmix(x: np.ndarray) -> np.ndarray:
    """The mean of the channels of (frames, channels) float32 `x`, bit for bit what
    `x.mean(axis=1, dtype=np.float32)` gives, ~15x cheaper for stereo: numpy's reduction over
    a short inner axis costs about as much as decoding the FLAC (bench/RESULTS.md). Below 8
    channels numpy adds them one after the other, as this does; from 8 on it sums in blocks,
    so those keep numpy's own mean."""
    channels = x.shape[1]
    if channels == 1:
        return x[:, 0]
    if channels >= SEQUENTIAL_MEAN_CHANNELS:
        return x.mean(axis=1, dtype=np.float32)
    out = np.zeros(len(x), dtype=np.float32)  # numpy's sum starts at +0.0 (so -0.0 becomes 0.0)
    for c in range(channels):
        out += x[:, c]
    out /= np.float32(channels)
    return out


def _decode_av(src: Source, target_sr: int, max_duration_s: float | None
               ) -> Iterator[np.ndarray]:
    import av

    try:
        with av.open(_open(src)) as container:
            if not container.streams.audio:
                raise AudioError("corrupt audio", "no audio stream")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=target_sr)
            out: list[np.ndarray] = []
            n = have = 0
            for frame in container.decode(container.streams.audio[0]):
                for rf in resampler.resample(frame):
                    out.append(rf.to_ndarray().reshape(-1))
                    n += rf.samples
                    have += rf.samples
                _check_length(n / target_sr, max_duration_s)
                if have >= BLOCK_S * target_sr:
                    yield np.concatenate(out)
                    out, have = [], 0
            for rf in resampler.resample(None):
                out.append(rf.to_ndarray().reshape(-1))
            if out:
                yield np.concatenate(out)
    except AudioError:
        raise
    except Exception as e:
        raise AudioError("corrupt audio", f"cannot decode ({type(e).__name__}: {e})") from None
