"""Short clips packed into 30 s windows vs one clip per input, on CPU with the real Whisper-base
(faster-whisper), side by side in one run.

Test set (made here): `--clips` espeak-ng utterances of 6-16 words in 5 voices at 4 speeds
(about 2-10 s each). Both ways go through the engine interface: alone, `transcribe` on each
clip; packed, the clips planned into windows (`asrd.audio.pack`, gap 1 s), `transcribe_packed`
on each window, and the rows it could not place transcribed alone, as the pipeline does.
Figures: WER of each way, words put in the wrong row (a word of another clip of the same window,
absent from the row's own reference), the share of rows sent back alone, and audio s per wall s.

    python bench/bench_packing.py --clips 96
"""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asrd import config as config_mod  # noqa: E402
from asrd.audio import decode  # noqa: E402
from asrd.audio.pack import Member, PackSettings, build_window, plan_windows  # noqa: E402
from asrd.demo import word_error_rate  # noqa: E402
from asrd.engines import Segment, build_engine  # noqa: E402
from bench.results import report  # noqa: E402

SR = 16000
VOICES = ["en-us", "en", "en-gb-x-rp", "en-us+m3", "en+f2"]
WORDS = ("river mountain quiet yellow window seven market garden engine silver morning paper "
         "travel winter doctor orange summer table letter bridge forest music island station "
         "number coffee village picture office animal").split()


def words_of(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=96)
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = ap.parse_args()
    rng = random.Random(11)
    refs, clips = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.clips):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16)))
            wav = Path(tmp) / f"c{i}.wav"
            subprocess.run(["espeak-ng", "-v", VOICES[i % 5], "-s", str(120 + 20 * (i % 4)),
                            "-w", str(wav), text], check=True, capture_output=True)
            refs.append(text)
            clips.append(decode(str(wav), SR))
    engine = build_engine(config_mod.load(None, ["run.index=x"]).engine)
    engine.transcribe([Segment(clips[0], "en")])  # warm up
    audio_s = sum(len(c) for c in clips) / SR

    t0 = time.perf_counter()
    alone = engine.transcribe([Segment(c, "en") for c in clips])
    alone_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    settings = PackSettings()
    packed: list[str | None] = [None] * len(clips)
    window_of: dict[int, list[int]] = {}
    groups = plan_windows([len(c) / SR for c in clips], settings)
    for group in groups:
        window, offsets = build_window([clips[i] for i in group], SR, settings.gap_s)
        members = [Member(i, str(i), off, len(clips[i]) / SR) for i, off in zip(group, offsets)]
        for i, text in zip(group, engine.transcribe_packed(Segment(window, "en"), members)):
            packed[i] = text
            window_of[i] = group
    sent_alone = [i for i, t in enumerate(packed) if t is None]
    for i, text in zip(sent_alone, engine.transcribe([Segment(clips[i], "en") for i in sent_alone])):
        packed[i] = text
    packed_s = time.perf_counter() - t0
    engine.close()

    wrong = total = 0
    for i, text in enumerate(packed):
        own = set(words_of(refs[i]))
        others = {w for j in window_of.get(i, []) if j != i for w in words_of(refs[j])}
        for w in words_of(text or ""):
            total += 1
            wrong += w not in own and w in others and i not in sent_alone
    wer_alone, wer_packed = word_error_rate(refs, alone), word_error_rate(refs, packed)
    work = (f"{args.clips} espeak clips, {audio_s:.0f} s ({audio_s / args.clips:.1f} s mean), "
            f"{len(groups)} windows")
    figures = [
        ("WER one clip per input / packed", f"{wer_alone:.1%} / {wer_packed:.1%} "
         f"({100 * (wer_packed - wer_alone):+.1f} points)"),
        ("words put in the wrong row (packed)", f"{wrong / max(total, 1):.2%} ({wrong} of {total})"),
        ("rows sent back to be transcribed alone", f"{len(sent_alone)} of {args.clips}"),
        ("audio s per wall s, one per input / packed", f"{audio_s / alone_s:.1f} / "
         f"{audio_s / packed_s:.1f} ({alone_s / packed_s:.2f}x)"),
    ]
    engine_note = "Whisper-base int8 (faster-whisper), CPU, one engine"
    report("packing", [(f, v, f"{work}; {engine_note}") for f, v in figures], args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
