"""The CPU front end's cost per audio second, stage by stage: what a GPU node's decode actors
spend to feed its engines (fetch, decode, resample, Silero VAD, packing, and the engine inputs
rendered in the decode actors with `engine.vllm.render_in: decode`).

Test sets (made here with espeak-ng): (a) `--clips` clips of 5.0 s (a sentence, padded or cut to
5 s) as 48 kHz stereo FLAC and as 16 kHz mono FLAC, decoded in chunks of
`pipeline.items_per_decode_task` and packed into 30 s windows, as the actors do; (b) long
recordings (`--minutes`, espeak sentences with pauses of 0.6-2.5 s and 10 s of silence every 8
sentences, 48 kHz stereo FLAC), VAD-cut into spans of at most 30 s and streamed in pieces.

Each measurement is a fresh process pinned to one core with OMP_NUM_THREADS=1 (what Ray gives a
one-CPU actor). It builds the real `DecodeWorker` (asrd.runtime.decode_worker) from the default
config, hands it vLLM's renderer as the engine does (`InputRenderer` over a `VllmConfig` of a
Whisper-large-v3-sized model folder: config and processor files, 128 mel bins, no weights;
vLLM's pure-Python package on the CPU), and calls its `decode` (clips) or `stream` (long
recordings) methods in-process. The stages are timed by wrapping the functions the actor calls
(decode, SpeechRegions.feed/finish, the packing step, the preparer, the feature
extractor inside it) with process CPU time, not wall time: this machine is shared. With
`--ray` the worker is a Ray actor instead, built as the pipeline builds it (one CPU, the
renderer passed by reference with every call), and the figure is its process's CPU in all,
Ray's transport included; both modes also give an actor's start-up CPU.

The renderer needs vLLM's Python package importable (on a CPU machine: vLLM's wheel and its
pure-Python dependencies unpacked on PYTHONPATH ahead of the venv's packages):

    PYTHONPATH=VLLM_SITE:.venv/lib/python3.11/site-packages:VLLM_DEPS \
        python bench/bench_frontend.py --clips 400 --minutes 10 20 --before main
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

from bench.bench_long_decode import build_talk, write_long  # noqa: E402
from bench.bench_segmentation import SR, VOICES, sentences, spoken  # noqa: E402
from bench.gpu.common import build_model  # noqa: E402
from bench.results import report  # noqa: E402

CLIP_S = 5.0
CHUNK = 16  # pipeline.items_per_decode_task in configs/h200.yaml

CHILD = r"""
import functools, json, os, sys, time
os.sched_setaffinity(0, {0})
spec = json.loads(sys.argv[1])
from omegaconf import OmegaConf
from asrd import config
from asrd.audio import vad as vad_mod
from asrd.runtime import decode_worker as dw
from asrd.runtime.records import WorkItem

cpu = {}

def timed(name, fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        t0 = time.process_time()
        try:
            return fn(*a, **k)
        finally:
            cpu[name] = cpu.get(name, 0.0) + time.process_time() - t0
    return wrapper

def timed_gen(name, fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        it = fn(*a, **k)
        while True:
            t0 = time.process_time()
            try:
                x = next(it)
            except StopIteration:
                return
            finally:
                cpu[name] = cpu.get(name, 0.0) + time.process_time() - t0
            yield x
    return wrapper

cfg = config.load(None, ["run.index=x", f"audio.vad.enabled={spec['vad']}", "engine.kind=vllm"])
actor_args = [OmegaConf.to_container(cfg[k], resolve=True) for k in ("audio", "store", "faults")]
preparer = None
if spec["model"]:
    from vllm.config import DeviceConfig, ModelConfig, VllmConfig
    from asrd.engines.vllm_inputs import InputRenderer, PromptSpec
    model = ModelConfig(model=spec["model"], tokenizer=spec["model"], mm_processor_cache_gb=0,
                        limit_mm_per_prompt={"audio": 1})
    vllm_config = VllmConfig(model_config=model, device_config=DeviceConfig(device="cpu"))
    preparer = InputRenderer(vllm_config, PromptSpec.from_engine_cfg("whisper", cfg.engine, "cpu"))
if spec["ray"]:  # a real Ray actor as the pipeline makes it; its process's CPU is measured
    import psutil, ray
    from asrd.engines import preparer_modules
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    actor = ray.remote(dw.DecodeWorker).options(num_cpus=1).remote(
        *actor_args, spec["pack"], preparer_modules(cfg.engine) if preparer else [])
    refs = [ray.put(preparer)] if preparer else []
    ray.get(actor.ping.remote())
    proc = psutil.Process(ray.get(actor.__ray_call__.remote(lambda self: os.getpid())))
    def actor_cpu():
        t = proc.cpu_times()
        return t.user + t.system
    def decode_call(items):
        return ray.get(list(actor.decode.remote(items, refs)))
    def stream_call(item, first):
        return ray.get(list(actor.stream.remote(item, first, {}, refs)))
    clock = actor_cpu
else:
    worker = dw.DecodeWorker(*actor_args, spec["pack"], [])
    def decode_call(items):
        return worker.decode(items, [])
    def stream_call(item, first):
        return worker.stream(item, first, {}, [])
    clock = time.process_time
if preparer and not spec["ray"]:
    worker.preparer = preparer
    worker.preparer._setup()
    from transformers.models.whisper import feature_extraction_whisper as fw
    fw.WhisperFeatureExtractor.__call__ = timed("log-mel", fw.WhisperFeatureExtractor.__call__)
    worker.preparer.prepare = timed("render", worker.preparer.prepare)
dw.decode = timed("read+decode+resample", dw.decode)
seg_mod = sys.modules["asrd.audio.segment"]  # the package exports a function of that name
seg_mod.decode_blocks = timed_gen("read+decode+resample", seg_mod.decode_blocks)
vad_mod.SpeechRegions.feed = timed("VAD", vad_mod.SpeechRegions.feed)
vad_mod.SpeechRegions.finish = timed("VAD", vad_mod.SpeechRegions.finish)
if not spec["ray"]:
    worker._pack = timed("packing", worker._pack)

def run(paths):
    audio_s = n_inputs = errors = 0
    if spec["mode"] == "clips":
        for i in range(0, len(paths), spec["chunk"]):
            chunk = paths[i:i + spec["chunk"]]
            items = [WorkItem(i + j, f"c{i + j}", p) for j, p in enumerate(chunk)]
            recs, inputs = decode_call(items)
            audio_s += sum(r.duration_s or 0.0 for r in recs)
            errors += sum(r.error is not None for r in recs)
            n_inputs += sum(len(x) for x in inputs)
    else:
        for row, p in enumerate(paths):
            item, first = WorkItem(row, f"long{row}", p, pack=False), 0
            while True:
                (rec,), (inputs,) = stream_call(item, first)
                errors += rec.error is not None
                n_inputs += len(inputs)
                first += len(rec.spans)
                if rec.last:
                    audio_s += rec.duration_s or 0.0
                    break
    return audio_s, n_inputs, errors

run(spec["warm"])  # first-call costs (VAD model, codecs, renderer caches) out of the way
startup = clock()  # imports, the renderer's set-up and the first call
cpu.clear()
t0 = clock()
audio_s, n_inputs, errors = run(spec["paths"])
total = clock() - t0
if spec["ray"]:
    ray.shutdown()
print(json.dumps({"total": total, "startup": startup, "stages": cpu, "audio_s": audio_s,
                  "inputs": n_inputs, "errors": errors}))
"""


def make_clips(folder: Path, n: int, rng: random.Random) -> tuple[list[Path], list[Path]]:
    """`n` clips of exactly 5 s (a sentence with its silence, padded or cut) in both formats."""
    import soundfile as sf
    import soxr

    stereo, mono = [], []
    for i, text in enumerate(sentences(n, rng)):
        x = spoken(text, folder, f"u{i}", VOICES[i % len(VOICES)], 150 + 20 * (i % 3))
        clip = np.zeros(int(CLIP_S * SR), np.float32)
        lead = int(0.3 * SR)
        body = x[:len(clip) - 2 * lead]
        clip[lead:lead + len(body)] = body
        mono.append(folder / f"m{i}.flac")
        sf.write(mono[-1], clip, SR, subtype="PCM_16")
        left = soxr.resample(clip, SR, 48000)
        stereo.append(folder / f"s{i}.flac")
        sf.write(stereo[-1], np.stack([left, 0.8 * left], axis=1), 48000, subtype="PCM_16")
    return stereo, mono


def measure(spec: dict, tree: Path = ROOT) -> dict:
    """One child process over the code in `tree`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env,
                         capture_output=True, text=True, cwd=tree)
    if out.returncode:
        raise RuntimeError(f"{spec['mode']} failed:\n{out.stderr[-3000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["errors"] == 0, got
    return got


def figures_of(name: str, got: dict, work: str) -> list[tuple[str, str, str]]:
    """CPU s per audio s and audio s per CPU s (one core), in all and per stage."""
    a = got["audio_s"]
    if not got["stages"]:  # a Ray actor: its process's CPU in all, not stage by stage
        return [(f"front end CPU ms per audio s, {name}, as a Ray actor (its process's CPU)",
                 f"{1000 * got['total'] / a:.2f}",
                 f"{work}; {a:.0f} audio s, {got['inputs']} engine inputs"),
                (f"decode Ray actor start-up CPU s (imports, VAD model, renderer, first call), "
                 f"{name}", f"{got['startup']:.1f}", work)]
    stages = dict(got["stages"])
    if "log-mel" in stages:
        stages["render (without log-mel)"] = stages["render"] - stages["log-mel"]
        del stages["render"]
    stages["the rest (actor bookkeeping, cut copies)"] = got["total"] - sum(
        v for k, v in got["stages"].items() if k != "log-mel")
    parts = "; ".join(f"{k} {1000 * v / a:.2f}" for k, v in stages.items())
    return [
        (f"front end CPU ms per audio s, {name}: total (by stage)",
         f"{1000 * got['total'] / a:.2f} ({parts})",
         f"{work}; {a:.0f} audio s, {got['inputs']} engine inputs"),
        (f"front end audio-s/s per core, {name}", f"{a / got['total']:.0f}", work),
        (f"decode actor start-up CPU s (imports, VAD model, renderer, first call), {name}",
         f"{got['startup']:.1f}", work),
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=400, help="5 s clips per format")
    ap.add_argument("--unique", type=int, default=80, help="distinct clips (files are reused)")
    ap.add_argument("--minutes", type=float, nargs="*", default=[10, 20])
    ap.add_argument("--no-render", action="store_true", help="without the vLLM renderer")
    ap.add_argument("--vad", choices=["true", "false"], default="true")
    ap.add_argument("--ray", action="store_true",
                    help="the worker as a Ray actor: its process's CPU, Ray's transport included")
    ap.add_argument("--before", default=None,
                    help="git ref whose asrd is measured too, each set before then after")
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = ap.parse_args()
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = "" if args.no_render else str(build_model("whisper-large-v3", folder))
        trees = [(ROOT, "")]
        if args.before:
            (folder / "before").mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "asrd",
                                      "hpc"], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(folder / "before")], input=archive, check=True)
            trees = [(folder / "before", f" [before: {args.before}]"), (ROOT, " [after]")]
        rng = random.Random(5)
        stereo, mono = make_clips(folder, args.unique, rng)
        render = "" if args.no_render else ", Whisper-large-v3 inputs rendered (vLLM, 128 mel)"
        for fmt, files in (("48 kHz stereo FLAC", stereo), ("16 kHz mono FLAC", mono)):
            paths = [str(files[i % len(files)]) for i in range(args.clips)]
            for tree, tag in trees:
                got = measure({"mode": "clips", "pack": True, "vad": args.vad, "chunk": CHUNK,
                               "model": model, "paths": paths, "warm": paths[:CHUNK],
                               "ray": args.ray}, tree)
                figures += figures_of(f"5 s clips, {fmt}, packed{tag}", got,
                                      f"espeak sentences, 16 per call, VAD {args.vad}{render}; "
                                      "one core, OMP_NUM_THREADS=1")
                print(figures[-2:], flush=True)
        if args.minutes:
            talk = build_talk(folder, 40, random.Random(11))
            warm = write_long(talk, 0.5, folder / "warm.flac")
            paths = [str(write_long(talk, m, folder / f"long-{m:g}.flac")) for m in args.minutes]
            mins = " + ".join(f"{m:g}" for m in args.minutes)
            for tree, tag in trees:
                got = measure({"mode": "long", "pack": False, "vad": args.vad, "chunk": CHUNK,
                               "model": model, "paths": paths, "warm": [str(warm)],
                               "ray": args.ray}, tree)
                figures += figures_of(
                    f"long recordings ({mins} min), VAD-cut, 48 kHz stereo FLAC{tag}", got,
                    f"espeak talk with pauses, streamed in pieces, VAD {args.vad}{render}; one "
                    "core, OMP_NUM_THREADS=1")
                print(figures[-2:], flush=True)
    report("frontend", figures, args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
