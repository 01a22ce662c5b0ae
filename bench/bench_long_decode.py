"""Peak memory and speed of a decode actor on long recordings: the whole recording decoded, then
cut (before), against the recording decoded, searched for speech and cut as a stream (after),
side by side in one run.

Test set (made here): a couple of minutes of espeak-ng sentences (several voices and speeds) with
pauses of 0.6-2.5 s and a 10 s silence every 8 sentences, repeated to `--minutes` each, written
as 48 kHz stereo FLAC. Each measurement is a fresh process pinned to one core that builds a
`DecodeWorker` (asrd.runtime.decode_worker) and does what the actor does for that row: before, its whole
decode call (`_decode_one`, code from git `--before`); after, its stream pieces (`_piece`) until
the last. The segments are pickled as Ray would copy them into the object store, and dropped
(an engine would take them). Peak RSS is the process's high-water mark from after the start
(imports, VAD model) to the end of the row; speed is audio seconds per CPU second. The spans of
both are compared: the streamed VAD should find the same segments as faster-whisper's whole-array
call, sample for sample.

    python bench/bench_long_decode.py --minutes 5 10 20 40 --before d20522e
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_segmentation import SR, VOICES, sentences, spoken  # noqa: E402
from bench.results import report  # noqa: E402

CHILD = r"""
import json, os, pickle, sys, time
os.sched_setaffinity(0, {0})
from omegaconf import OmegaConf
from asrd import config
from asrd.audio.vad import check_available
from asrd.runtime.decode_worker import DecodeWorker
from asrd.runtime.records import WorkItem

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024

mode, path, warm = sys.argv[1], sys.argv[2], sys.argv[3]
cfg = config.load(None, ["run.index=x"])
worker = DecodeWorker(*[OmegaConf.to_container(cfg[k], resolve=True)
                        for k in ("audio", "store", "faults")], False, [])
check_available()
worker._decode_one(WorkItem(0, "warm", warm))  # first-call costs (model, codecs) out of the way
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the RSS high-water mark
start_rss = status("VmRSS:")
item = WorkItem(1, "long", path)
spans, t0 = [], time.process_time()
if mode == "whole":
    rec, segments = worker._decode_one(item)
    blob = pickle.dumps(segments, protocol=5)
    spans, duration = rec.spans, rec.duration_s
    del segments, blob
else:
    first = 0
    while True:
        rec, segments = worker._piece(item, first, {})
        blob = pickle.dumps(segments, protocol=5)
        del segments, blob
        spans += rec.spans
        first += len(rec.spans)
        if rec.last:
            duration = rec.duration_s
            break
cpu = time.process_time() - t0
print(json.dumps({"peak": status("VmHWM:"), "start": start_rss, "cpu_s": cpu,
                  "audio_s": duration, "spans": spans, "error": rec.error}))
"""


def build_talk(folder: Path, n: int, rng: random.Random) -> np.ndarray:
    parts = []
    for i, text in enumerate(sentences(n, rng)):
        parts.append(spoken(text, folder, f"s{i}", VOICES[i % len(VOICES)], 130 + 20 * (i % 3)))
        pause = 10.0 if i % 8 == 7 else rng.uniform(0.6, 2.5)
        parts.append(np.zeros(int(pause * SR), np.float32))
    return np.concatenate(parts)


def write_long(talk: np.ndarray, minutes: float, out: Path) -> Path:
    import soundfile as sf
    import soxr

    n = int(minutes * 60 * SR)
    mono = np.resize(talk, n)  # the talk repeated, cut at the length
    left = soxr.resample(mono, SR, 48000)
    sf.write(out, np.stack([left, 0.8 * left], axis=1), 48000, subtype="PCM_16")
    return out


def measure(tree: Path, mode: str, path: Path, warm: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(warm)], env=env,
                         capture_output=True, text=True, cwd=tree)
    if out.returncode:
        raise RuntimeError(f"{mode} in {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, nargs="+", default=[5, 10, 20])
    ap.add_argument("--sentences", type=int, default=40, help="sentences in the repeated talk")
    ap.add_argument("--before", default="main", help="git ref of the whole-recording decode")
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = ap.parse_args()
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        before = folder / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "asrd", "hpc"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        talk = build_talk(folder, args.sentences, random.Random(11))
        warm = write_long(talk, 0.1, folder / "warm.flac")
        for minutes in args.minutes:
            path = write_long(talk, minutes, folder / f"long-{minutes:g}.flac")
            old = measure(before, "whole", path, warm)
            new = measure(ROOT, "stream", path, warm)
            assert old["error"] is None and new["error"] is None, (old["error"], new["error"])
            same = sum(a == b for a, b in zip(old["spans"], new["spans"]))
            work = f"{minutes:g} min 48 kHz stereo FLAC of espeak speech + pauses, one core"
            figures += [
                (f"decode actor peak RSS, {minutes:g} min recording, whole -> stream",
                 f"{old['peak'] / 2**20:.0f} MB -> {new['peak'] / 2**20:.0f} MB "
                 f"(above start: {(old['peak'] - old['start']) / 2**20:.0f} -> "
                 f"{(new['peak'] - new['start']) / 2**20:.0f} MB)", work),
                (f"decode actor x real time per core (decode, resample, VAD, cut), {minutes:g} min,"
                 " whole -> stream",
                 f"{old['audio_s'] / old['cpu_s']:.0f}x -> {new['audio_s'] / new['cpu_s']:.0f}x",
                 work),
                (f"segments streamed = whole-array VAD, {minutes:g} min",
                 f"{same} of {len(old['spans'])} identical"
                 f"{'' if len(old['spans']) == len(new['spans']) else ' (counts differ)'}", work),
            ]
            print(figures[-3:], flush=True)
    report("long decode", figures, args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
