"""Decode + resample throughput per core: asrd's decode path against the second seed's naive path.

asrd: soundfile (libsndfile) block reads, downmix, soxr HQ streaming resample (asrd.audio.decode).
naive: `torchaudio.load` + a fresh `torchaudio.transforms.Resample` per item, as in the seed.
Both run pinned to one core, over the same files, in one invocation (the naive half in the venv
made by bench/make_torchaudio_env.sh, since torchaudio 2.11 needs torch 2.11).
Usage: python bench/bench_decode.py --naive-python /tmp/asrd-torchaudio-venv/bin/python [--record]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAIVE = r"""
import json, sys, time, torch, torchaudio, torchaudio.transforms as T
torch.set_num_threads(1)
files = json.loads(sys.argv[1]); total = 0.0
t = time.process_time()
for f in files:
    w, sr = torchaudio.load(f)
    w = w.mean(0, keepdim=True)
    y = T.Resample(sr, 16000)(w)
    total += y.shape[-1] / 16000
print(json.dumps({"audio_s": total, "cpu_s": time.process_time() - t}))
"""


def make_files(folder: Path, n: int, rate: int, channels: int, ext: str) -> list[str]:
    from asrd.speech_samples import SENTENCES, speak

    text = ". ".join(SENTENCES[:3])  # ~10 s of speech
    return [str(speak(text, folder / f"clip{i:03d}.{ext}", rate, channels, speed=140 + i % 20))
            for i in range(n)]


def asrd_rate(files: list[str]) -> dict:
    from asrd.audio import decode

    total = 0.0
    t = time.process_time()
    for f in files:
        total += len(decode(f, 16000)) / 16000
    return {"audio_s": total, "cpu_s": time.process_time() - t}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--naive-python", required=True)
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--record", action="store_true")
    a = ap.parse_args()
    os.sched_setaffinity(0, {0})  # one core; the naive child inherits it
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for rate, ch, ext in [(48000, 2, "flac"), (44100, 1, "mp3")]:
            files = make_files(Path(d) / ext, a.clips, rate, ch, ext)
            ours = asrd_rate(files)
            out = subprocess.run([a.naive_python, "-c", NAIVE, json.dumps(files)], check=True,
                                 capture_output=True, text=True)
            naive = json.loads(out.stdout.strip().splitlines()[-1])
            r_ours, r_naive = (x["audio_s"] / x["cpu_s"] for x in (ours, naive))
            rows.append((f"{rate // 1000} kHz {'stereo' if ch == 2 else 'mono'} {ext.upper()}",
                         r_ours, r_naive))
    for name, o, n in rows:
        print(f"{name}: asrd {o:.0f}x real time per core, naive {n:.0f}x, speed-up {o / n:.2f}x")
    if a.record:
        day = datetime.date.today().isoformat()
        machine = f"{platform.node()} (x86_64, 1 of 2 cores)"
        cmd = "python bench/bench_decode.py --naive-python $(bash bench/make_torchaudio_env.sh) --record"
        with open(ROOT / "bench" / "RESULTS.md", "a") as f:
            for name, o, n in rows:
                for fig, v in (("asrd decode+resample, x real time per core", o),
                               ("naive torchaudio.load + fresh Resample, x real time per core", n),
                               ("speed-up asrd / naive", o / n)):
                    f.write(f"| decode | {fig} | {v:,.2f} | {a.clips} clips of ~10 s, {name} | "
                            f"{machine} | {day} | `{cmd}` |\n")


if __name__ == "__main__":
    main()
