"""Segmentation by speech vs by samples, on CPU with the real Whisper-base (faster-whisper).

Test set (made here, nothing downloaded): espeak-ng sentences with known text, in several voices
and speeds.
- non-speech: silence, white noise, a 440 Hz tone and a 100 Hz - 4 kHz sweep, 20 s and 60 s each:
  words the model writes on them;
- long recordings: `--long` recordings of `--sentences` different sentences each, 0.6-2.5 s pauses
  between them: WER of the whole recording (segments joined) against the WER of the same
  sentences transcribed one by one;
- one sentence said `--repeat` times (pauses 0.3-1.0 s): how many of the repeats come out, and the
  WER, with VAD and without (Whisper tends to write a repeated sentence once per window);
- VAD speed: x real time on one core.
Each recording goes through what a decode actor does (`asrd.audio.segment`) and the engine
interface, with VAD (the default) and without (cut at the quietest frame before 30 s).

    python bench/bench_segmentation.py --long 3 --sentences 24 --repeat 40
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asrd import config as config_mod  # noqa: E402
from asrd.audio import VadSettings, decode, segment  # noqa: E402
from asrd.demo import word_error_rate  # noqa: E402
from asrd.engines import Segment, build_engine  # noqa: E402
from asrd.runtime.resegment import looks_failed  # noqa: E402
from asrd.speech_samples import NON_SPEECH, non_speech  # noqa: E402
from bench.results import report  # noqa: E402

SR = 16000
WORDS = ("river mountain quiet yellow window seven market garden engine silver morning "
         "paper travel winter doctor orange summer table letter bridge forest music "
         "island station number coffee village picture office animal").split()
VOICES = ["en-us", "en", "en-gb-x-rp", "en-us+m3", "en+f2"]


def sentences(n: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 12))) for _ in range(n)]


def spoken(text: str, folder: Path, name: str, voice: str, speed: int) -> np.ndarray:
    import subprocess

    wav = folder / f"{name}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text],
                   check=True, capture_output=True)
    x = decode(str(wav), SR)
    loud = np.flatnonzero(np.abs(x) > 0.01)
    return x[loud[0]:loud[-1] + 1]


def transcribe(engine, audio: np.ndarray, vad: VadSettings | None, retry_s: float = 0.0,
               max_s: float = 30.0) -> str:
    """As the pipeline does: cut, transcribe; with `retry_s`, a recording with a long segment
    whose text looks failed (asrd.runtime.resegment) is cut again, shorter, and redone once."""
    cut = segment(audio, SR, max_s, vad)
    if not cut.spans:
        return ""
    texts = engine.transcribe([Segment(audio[a:b], "en") for a, b in cut.spans])
    if any(looks_failed(t, (b - a) / SR, retry_s) for t, (a, b) in zip(texts, cut.spans)):
        cut = segment(audio, SR, retry_s, vad)
        texts = engine.transcribe([Segment(audio[a:b], "en") for a, b in cut.spans])
    return " ".join(t.strip() for t in texts if t.strip())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", type=int, default=3, help="long recordings")
    ap.add_argument("--sentences", type=int, default=24, help="sentences per long recording")
    ap.add_argument("--repeat", type=int, default=40, help="repeats of one sentence")
    ap.add_argument("--shorter", default="", help="also long-form WER with VAD segments of at "
                    "most these lengths (comma-separated seconds; no second tries)")
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = ap.parse_args()
    rng = random.Random(7)
    engine = build_engine(config_mod.load(None, ["run.index=x"]).engine)
    vad = VadSettings()
    figures: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        # non-speech
        for with_vad in (True, False):
            words = 0
            for kind in NON_SPEECH:
                for seconds in (20.0, 60.0):
                    text = transcribe(engine, non_speech(kind, seconds), vad if with_vad else None)
                    words += len(text.split())
            figures.append((f"words written on non-speech, VAD {'on' if with_vad else 'off'}",
                            str(words), "silence, noise, tone, sweep x 20 s and 60 s (8 files)"))
        # long recordings
        refs, whole, joined = [], {True: [], False: []}, []
        lengths = [float(x) for x in args.shorter.split(",") if x]
        shorter: dict[float, list[str]] = {m: [] for m in lengths}
        total_s = 0.0
        for k in range(args.long):
            texts = sentences(args.sentences, rng)
            voice, speed = VOICES[k % len(VOICES)], 130 + 20 * (k % 3)
            clips = [spoken(t, folder, f"l{k}-{i}", voice, speed) for i, t in enumerate(texts)]
            parts = []
            for c in clips:
                parts += [c, np.zeros(int(rng.uniform(0.6, 2.5) * SR), np.float32)]
            audio = np.concatenate(parts)
            total_s += len(audio) / SR
            refs.append(" ".join(texts))
            joined.append(" ".join(engine.transcribe([Segment(c, "en") for c in clips])))
            for with_vad in (True, False):
                whole[with_vad].append(transcribe(engine, audio, vad if with_vad else None,
                                                  10.0 if with_vad else 0.0))
            for m in lengths:
                shorter[m].append(transcribe(engine, audio, vad, 0.0, m))
        base = word_error_rate(refs, joined)
        work = f"{args.long} recordings x {args.sentences} sentences ({total_s:.0f} s), pauses 0.6-2.5 s"
        figures.append(("long-form WER, sentences transcribed one by one", f"{base:.1%}", work))
        for with_vad in (True, False):
            wer = word_error_rate(refs, whole[with_vad])
            figures.append((f"long-form WER, whole recordings, VAD {'on' if with_vad else 'off'}",
                            f"{wer:.1%} ({100 * (wer - base):+.1f} points)", work))
        for m in lengths:
            wer = word_error_rate(refs, shorter[m])
            figures.append((f"long-form WER, whole recordings, VAD segments of at most {m:.0f} s",
                            f"{wer:.1%} ({100 * (wer - base):+.1f} points)", work))
        # one sentence, said again and again
        said = "the quick brown fox jumps over the lazy dog"
        clip = spoken(said, folder, "repeat", "en-us", 160)
        parts_r = []
        for _ in range(args.repeat):
            parts_r += [clip, np.zeros(int(rng.uniform(0.3, 1.0) * SR), np.float32)]
        looped = np.concatenate(parts_r)
        work = f"one sentence said {args.repeat} times ({len(looped) / SR:.0f} s), pauses 0.3-1.0 s"
        for how, seg_vad, retry_s in (("VAD on, failed segments cut again (the default)", vad, 10.0),
                                      ("VAD on, no second try", vad, 0.0),
                                      ("VAD off", None, 0.0)):
            text = transcribe(engine, looped, seg_vad, retry_s)
            found = text.lower().count("lazy")
            wer = word_error_rate([" ".join([said] * args.repeat)], [text])
            figures.append((f"repeated sentence, repeats transcribed, {how}",
                            f"{found} of {args.repeat} (WER {wer:.1%})", work))
        # VAD speed on one core
        audio = np.concatenate([np.concatenate(parts)] * 3)
        segment(audio[:SR * 5], SR, 30.0, vad)  # load the model
        t0 = time.perf_counter()
        segment(audio, SR, 30.0, vad)
        figures.append(("VAD x real time, one core", f"{len(audio) / SR / (time.perf_counter() - t0):.0f}x",
                        f"{len(audio) / SR:.0f} s of speech with pauses"))
    engine.close()
    engine_note = "Whisper-base int8 (faster-whisper), CPU"
    report("segmentation", [(f, v, f"{w}; {engine_note}") for f, v, w in figures], args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
