"""The real Whisper-base on CPU through its two engines, on the labelled espeak-ng set: the
converted Transformers folder (asrd.testing.real_whisper) against faster-whisper, one clip per
input, and packed into 30 s windows split back by the model's own timestamps.

The set: asrd.speech_samples.make_labelled_set (the 8 English sentences of asrd.speech_samples
in 5 voices at 130, 160 and 190 words per minute: 120 clips of 2.5-5.4 s, 16 kHz). WER is the
corpus WER after Whisper's English normaliser. Both engines compute in float32.

    python bench/bench_real_whisper.py [--set DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import soundfile as sf

from asrd import config as config_mod
from asrd.audio.pack import Member, PackSettings, build_window, plan_windows
from asrd.engines import PackedWindow, Segment, build_engine
from asrd.engines.faster_whisper_engine import bundled_model_dir
from asrd.quality.reference import normaliser
from asrd.testing.real_whisper import convert
from asrd.speech_samples import make_labelled_set


def corpus_wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    norm = normaliser("en")
    return float(jiwer.wer([norm(r) for r in refs], [norm(h) or "<empty>" for h in hyps]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", help="the labelled set's folder (default: made in a temp folder)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-real-whisper-"))
    manifest = (Path(args.set) / "manifest.jsonl" if args.set
                else make_labelled_set(work / "set"))
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    rows = [r for r in rows if r["language"] == "en" and r["reference"]]
    audio = [sf.read(manifest.parent / r["path"], dtype="float32")[0] for r in rows]
    refs = [r["reference"] for r in rows]
    model = convert(bundled_model_dir("whisper-base"), work / "whisper-base-hf")
    common = ["engine.compute_type=float32", "engine.cpus_per_engine=2", "engine.language=en"]
    fw = build_engine(config_mod.load(None, ["engine.model=whisper-base", *common]).engine)
    hf = build_engine(config_mod.load(None, ["engine.kind=transformers", f"engine.model={model}",
                                             "engine.batch_size=8", *common]).engine)
    segments = [Segment(a, "en") for a in audio]
    out = {}
    for name, engine in (("faster_whisper", fw), ("transformers", hf)):
        t0 = time.perf_counter()
        out[f"wer_alone_{name}"] = corpus_wer(refs, engine.transcribe(segments))
        out[f"seconds_alone_{name}"] = time.perf_counter() - t0
    groups = plan_windows([len(a) / 16000 for a in audio], PackSettings())
    windows = []
    for g in groups:
        window, offsets = build_window([audio[i] for i in g], 16000, 1.0)
        windows.append(PackedWindow(Segment(window, "en"), tuple(
            Member(i, rows[i]["id"], at, len(audio[i]) / 16000) for i, at in zip(g, offsets))))
    for name, engine in (("faster_whisper", fw), ("transformers", hf)):
        t0 = time.perf_counter()
        split = engine.hypotheses_windows(windows)
        texts = {i: h.text for w, hyps in zip(windows, split) for m, h in zip(w.members, hyps)
                 if h is not None for i in [m.row]}
        alone = [i for i in range(len(rows)) if i not in texts]
        for i, text in zip(alone, engine.transcribe([segments[i] for i in alone])):
            texts[i] = text  # an unplaceable clip is transcribed alone, as in the pipeline
        out[f"placed_{name}"] = len(rows) - len(alone)
        out[f"wer_packed_{name}"] = corpus_wer(refs, [texts[i] for i in range(len(rows))])
        out[f"seconds_packed_{name}"] = time.perf_counter() - t0
    out.update(clips=len(rows), windows=len(groups),
               audio_s=round(sum(len(a) for a in audio) / 16000, 1))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
