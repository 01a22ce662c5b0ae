"""Silero VAD (what asrd runs) vs WebRTC VAD, side by side on the same audio, one core.

Both detectors' frame decisions get the same post-processing (speech regions joined across
pauses shorter than 500 ms, dropped when shorter than 250 ms, padded by 300 ms), so the figures
compare the detectors:
- false speech: seconds called speech in 20 s each of silence, white noise, a 440 Hz tone and a
  100 Hz - 4 kHz sweep (asrd's `non_speech`), and in the same mixed with nothing else;
- speech found: the share of espeak sentences' time (different voices and speeds, pauses of
  0.6-2.5 s between them) inside a region, and the share of the pauses left out;
- speed: x real time on one core.
WebRTC VAD is not an asrd dependency: `pip install webrtcvad-wheels` to run this.

    python bench/bench_vad_compare.py --sentences 40
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asrd.audio import VadSettings, decode  # noqa: E402
from asrd.audio.vad import speech_regions  # noqa: E402
from asrd.speech_samples import NON_SPEECH, non_speech  # noqa: E402
from bench.results import report  # noqa: E402

SR = 16000
VOICES = ["en-us", "en", "en-gb-x-rp", "en-us+m3", "en+f2"]
WORDS = ("river mountain quiet yellow window seven market garden engine silver morning paper "
         "travel winter doctor orange summer table letter bridge forest music island").split()


def webrtc_regions(audio: np.ndarray, s: VadSettings, mode: int = 3,
                   frame_ms: int = 30) -> list[tuple[int, int]]:
    """WebRTC's per-frame decisions, then the same joining, dropping and padding as Silero's."""
    import webrtcvad

    vad = webrtcvad.Vad(mode)
    n = SR * frame_ms // 1000
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    speech = [vad.is_speech(pcm[i:i + n].tobytes(), SR) for i in range(0, len(pcm) - n + 1, n)]
    runs, start = [], None
    for i, flag in enumerate(speech + [False]):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start * n, i * n))
            start = None
    joined: list[tuple[int, int]] = []
    for a, b in runs:
        if joined and a - joined[-1][1] < s.min_silence_ms * SR // 1000:
            joined[-1] = (joined[-1][0], b)
        else:
            joined.append((a, b))
    pad = s.speech_pad_ms * SR // 1000
    return [(max(0, a - pad), min(len(audio), b + pad)) for a, b in joined
            if b - a >= s.min_speech_ms * SR // 1000]


def silero_regions(audio: np.ndarray, s: VadSettings) -> list[tuple[int, int]]:
    return speech_regions(audio, s, 30.0)


def covered(regions: list[tuple[int, int]], spans: list[tuple[int, int]]) -> float:
    """The share of `spans`' samples inside some region."""
    mask = np.zeros(max([b for _, b in spans] + [b for _, b in regions] + [0]), bool)
    for a, b in regions:
        mask[a:b] = True
    total = sum(b - a for a, b in spans)
    return sum(int(mask[a:b].sum()) for a, b in spans) / total if total else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=40)
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = ap.parse_args()
    rng = random.Random(3)
    settings = VadSettings()
    parts, sentences, pauses, at = [], [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.sentences):
            wav = Path(tmp) / f"s{i}.wav"
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12)))
            subprocess.run(["espeak-ng", "-v", VOICES[i % 5], "-s", str(120 + 20 * (i % 4)), "-w",
                            str(wav), text], check=True, capture_output=True)
            x = decode(str(wav), SR)
            loud = np.flatnonzero(np.abs(x) > 0.01)
            x = x[loud[0]:loud[-1] + 1]
            gap = np.zeros(int(rng.uniform(0.6, 2.5) * SR), np.float32)
            sentences.append((at, at + len(x)))
            pauses.append((at + len(x) + SR // 2, at + len(x) + len(gap) - SR // 2))
            parts += [x, gap]
            at += len(x) + len(gap)
    speech = np.concatenate(parts)
    others = {kind: non_speech(kind, 20.0) for kind in NON_SPEECH}
    work = (f"{args.sentences} espeak sentences, 5 voices, 4 speeds, pauses 0.6-2.5 s "
            f"({len(speech) / SR:.0f} s); non-speech: {', '.join(NON_SPEECH)}, 20 s each; "
            "same joining/padding for both")
    figures = []
    for name, find in (("Silero (asrd)", silero_regions), ("WebRTC mode 3", webrtc_regions)):
        find(speech[:SR], settings)  # load
        false_s = {k: sum(b - a for a, b in find(x, settings)) / SR for k, x in others.items()}
        t0 = time.perf_counter()
        regions = find(speech, settings)
        took = time.perf_counter() - t0
        quiet = [(a + SR // 2, b - SR // 2) for a, b in pauses if b - a > SR]
        figures += [
            (f"{name}: seconds called speech in 80 s of non-speech",
             f"{sum(false_s.values()):.1f} (" + ", ".join(f"{k} {v:.1f}" for k, v in
                                                          false_s.items()) + ")", work),
            (f"{name}: sentence time found / pause time left out",
             f"{covered(regions, sentences):.1%} / {1 - covered(regions, quiet):.1%}", work),
            (f"{name}: x real time, one core", f"{len(speech) / SR / took:.0f}x", work),
        ]
    report("vad", figures, args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
