"""`asrd run-shard` end to end with the real Whisper-base on vLLM and real speech: short clips
packed into windows against one clip per input, side by side in one GPU call.

The clips are the English sentences of the labelled set (asrd.speech_samples.make_labelled_set:
espeak-ng, five voices, three speeds; 2.5-5.4 s each), cycled to `--files` files. Each mode runs
the whole pipeline (decode, Silero VAD, packing or not, vLLM, the writer) with real outputs, so
the packed run's split-back by the model's own timestamps is timed too. Per mode it records the
rate (steady: from the first committed part, start-up excluded), the WER against the references,
how many rows were packed, and the output tokens Whisper wrote per second of detected speech
(the rows' texts re-tokenised: text tokens plus the end token; a packed window's timestamp
tokens, two per clip, are not counted).

    python bench/gpu/real_speech_e2e.py --set DIR --model-dir DIR --files 8192
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from common import ROOT, figure, out_dir, save
from e2e_run_shard import timed_run_shard


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", required=True, help="the labelled set's folder (manifest.jsonl)")
    ap.add_argument("--model-dir", required=True, help="the real Whisper-base, Transformers folder")
    ap.add_argument("--files", type=int, default=8192)
    ap.add_argument("--modes", default="packed,unpacked")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--calls", type=int, default=16)
    ap.add_argument("--part-rows", type=int, default=256)
    ap.add_argument("--work", default="/tmp/asrd-real-e2e")
    ap.add_argument("--limit-s", type=float, default=240)
    ap.add_argument("--set-override", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    import jiwer
    import soundfile as sf
    from transformers import WhisperTokenizer

    from asrd.quality.reference import normaliser

    src = Path(args.set)
    rows = [json.loads(line) for line in (src / "manifest.jsonl").read_text().splitlines()]
    speech = [r for r in rows if r["language"] == "en" and r["reference"]]
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    audio = work / "audio"
    audio.mkdir(parents=True)
    manifest = []
    for i in range(args.files):
        r = speech[i % len(speech)]
        name = f"utt{i:06d}.flac"
        os.symlink((src / r["path"]).resolve(), audio / name)
        manifest.append({"path": name, "reference": r["reference"], "language": "en"})
    per_clip = sum(sf.info(src / r["path"]).duration for r in speech) / len(speech)
    (audio / "manifest.jsonl").write_text("".join(json.dumps(m) + "\n" for m in manifest))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0"),
           "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}", "WANDB_MODE": "disabled"}
    cli = [sys.executable, "-m", "asrd.cli"]
    index = work / "index.parquet"
    subprocess.run([*cli, "index", str(audio / "manifest.jsonl"), "-o", str(index)], check=True,
                   env=env, cwd=ROOT)
    tok = WhisperTokenizer.from_pretrained(args.model_dir)
    norm = normaliser("en")
    figs = []
    for mode in args.modes.split(","):
        # packed | unpacked; "-bf16": bfloat16 weights; "-fp8": an fp8 KV cache (bfloat16 weights,
        # which vLLM's FlashAttention needs with fp8), so its WER compares with "-bf16"'s;
        # "-model": prompts from vLLM's Whisper class (the generic transcription path)
        run_dir = work / f"run-{mode}"
        packed = mode.split("-")[0] == "packed"
        kv = ["engine.vllm.kv_cache_dtype=fp8"] if mode.endswith("-fp8") else []
        kv += ["engine.vllm.prompts=model"] if mode.endswith("-model") else []
        dtype = "bfloat16" if mode.endswith(("-fp8", "-bf16")) else "float16"
        overrides = [
            f"run.index={index}", f"run.dir={run_dir}", "run.num_shards=1", "engine.kind=vllm",
            f"engine.model={args.model_dir}", f"engine.compute_type={dtype}", "engine.language=en",
            "engine.num_engines=1", "engine.gpus_per_engine=1", "engine.cpus_per_engine=2",
            f"engine.batch_size={args.batch}", f"engine.calls_in_flight={args.calls}",
            f"pipeline.part_rows={args.part_rows}", "pipeline.part_seconds=3600",
            "wandb.mode=disabled", f"audio.pack.enabled={str(packed).lower()}",
            *kv, *args.set_override]
        subprocess.run([*cli, "plan", *overrides], check=True, env=env, cwd=ROOT)
        run = timed_run_shard(overrides, run_dir, env, out_dir() / f"real-e2e-{mode}.log",
                              args.part_rows, args.limit_s)
        table = run.table().to_pylist()
        done = run.completions(args.files)
        refs = [norm(r["reference"]) for r in table]
        hyps = [norm(r["text"] or "") or "<empty>" for r in table]
        speech_s = sum(r["speech_s"] or 0.0 for r in table)
        tokens = sum(len(tok.encode(r["text"] or "", add_special_tokens=False)) + 1
                     for r in table)
        fig = figure("whisper-base (real)", f"real_speech_run_shard_{mode}", done, done[0][0],
                     per_clip, round(tokens / len(table)), run.gpu,
                     total_wall_s=round(run.t_end - run.t0, 1), rows=len(table),
                     error_rows=sum(r["error"] is not None for r in table),
                     packed_rows=sum(r["pack_window"] is not None for r in table),
                     wer=round(float(jiwer.wer(refs, hyps)), 4),
                     tokens_per_speech_s=round(tokens / speech_s, 2) if speech_s else None,
                     speech_s_per_row=round(speech_s / len(table), 3),
                     decode_cpu_s_per_audio_s=round(run.decode_cpu_s / (len(table) * per_clip), 5),
                     partial_at_limit_s=run.partial_at_limit_s,
                     note="real weights; rate from the first committed part")
        figs.append(fig)
        print(f"REAL {mode}: {fig.line()} wer={fig.notes['wer']} "
              f"packed={fig.notes['packed_rows']} tokens/speech-s="
              f"{fig.notes['tokens_per_speech_s']}", flush=True)
    if len(figs) == 2 and figs[1].steady_audio_s_per_s:
        print(f"REAL packed/unpacked steady: "
              f"{figs[0].steady_audio_s_per_s / figs[1].steady_audio_s_per_s:.2f}x", flush=True)
    save(figs, out_dir() / "figures.jsonl", device=run.gpu.name)


if __name__ == "__main__":
    main()
    os._exit(0)
