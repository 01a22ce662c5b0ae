"""(b) `asrd run-shard` end to end with the vLLM engine: audio files -> index -> plan -> one shard.

Writes `--files` WAV files of `--clip-s` s, indexes and plans them as one shard, then times
`python -m asrd.cli run-shard` (Ray decode actors -> vLLM engine actors -> writer). Progress is
read from the shard's committed parts (`pipeline.part_rows` rows each), so the steady rate
excludes the engines' start-up; NVML is sampled meanwhile.

    python bench/gpu/e2e_run_shard.py --model whisper-base --files 6144 --engines 1

`--render-in decode` (the default) renders vLLM's engine inputs in the decode actors;
`--render-in engine` in the engine actor's process (the earlier layout), for comparison.

`--pack` packs the short clips into windows with the benchmark plug-in engine
(bench/gpu/timed_shape.py), whose random-weight output has a real Whisper's timestamped shape, so
the split-back is timed too. `--long-s S` writes recordings of S seconds instead of clips (VAD
off: each is cut into `audio.max_segment_s` pieces, each decoding `--tokens`). The decode actors'
CPU time per second of audio is read from their processes (psutil) for the CPU budget per GPU.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import (ROOT, GpuSampler, build_model, clips, dtype_of, figure, out_dir, save,
                    workload_parser)


def main() -> None:
    ap = workload_parser()
    ap.add_argument("--files", type=int, default=3072)
    ap.add_argument("--engines", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--calls", type=int, default=16)
    ap.add_argument("--part-rows", type=int, default=128)
    ap.add_argument("--work", default="/tmp/asrd-e2e")
    ap.add_argument("--limit-s", type=float, default=420)
    ap.add_argument("--render-in", default="decode", choices=["decode", "engine"])
    ap.add_argument("--decode-actors", type=int, default=0)
    ap.add_argument("--judge", default=None, help="a judge model of MODELS (e.g. qwen2-7b): the "
                    "vLLM judge beside the engines on the same GPU")
    ap.add_argument("--gpu-share", type=float, default=0.85,
                    help="gpu_memory_utilization of the engines (all of them together)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="more config overrides (repeatable)")
    ap.add_argument("--tag", default="", help="appended to the figure's mode")
    ap.add_argument("--pack", action="store_true", help="pack short clips (timed_shape engine)")
    ap.add_argument("--long-s", type=float, default=0.0,
                    help="recordings of this many seconds, cut into audio.max_segment_s pieces")
    args = ap.parse_args()
    seconds = args.long_s or args.clip_s  # one file's audio
    import soundfile as sf

    model_dir = build_model(args.model, args.models_root, args.tokenizer_json)
    work = Path(args.work)
    audio = work / "audio"
    stamp = work / "files.json"
    want = {"files": args.files, "seconds": seconds}
    if not stamp.is_file() or json.loads(stamp.read_text()) != want:
        shutil.rmtree(work, ignore_errors=True)
        audio.mkdir(parents=True)
        arrays = clips(args.files, seconds, distinct=8 if args.long_s else 64)

        def write(i):
            sf.write(audio / f"utt{i:06d}.wav", arrays[i], 16000, subtype="PCM_16")

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(write, range(args.files)))
        (audio / "manifest.jsonl").write_text("".join(
            json.dumps({"path": f"utt{i:06d}.wav", "language": "en"}) + "\n"
            for i in range(args.files)))
        stamp.write_text(json.dumps(want))
    run_dir = work / f"run-{args.model}-{args.engines}-{args.render_in}{args.tag}"
    shutil.rmtree(run_dir, ignore_errors=True)
    index = work / "index.parquet"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0"),
           "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}", "WANDB_MODE": "disabled"}
    cli = [sys.executable, "-m", "asrd.cli"]
    if not index.is_file():
        subprocess.run([*cli, "index", str(audio / "manifest.jsonl"), "-o", str(index)], check=True,
                       env=env, cwd=ROOT)
    kind = "bench.gpu.timed_shape:TimedShapeVllmEngine" if args.pack else "vllm"
    overrides = [
        f"run.index={index}", f"run.dir={run_dir}", "run.num_shards=1", f"engine.kind={kind}",
        f"audio.pack.enabled={str(args.pack).lower()}",
        f"engine.model={model_dir}", "engine.load_format=dummy",
        f"engine.compute_type={dtype_of(args.model)}", "engine.ignore_eos=true",
        f"engine.max_new_tokens={args.tokens}", "engine.temperature=0.0", "engine.language=en",
        f"engine.num_engines={args.engines}", f"engine.gpus_per_engine={1.0 / args.engines}",
        "engine.cpus_per_engine=2", f"engine.batch_size={args.batch}",
        f"engine.calls_in_flight={args.calls}", f"pipeline.part_rows={args.part_rows}",
        "pipeline.part_seconds=3600", "wandb.mode=disabled",
        f"engine.vllm.render_in={args.render_in}",
        "audio.vad.enabled=false",  # the synthetic clips are tones, not speech: VAD would drop them
        # Random weights write no real text, which reads as a failed long segment: every row would
        # be transcribed a second time in 10 s pieces (3 model inputs per row instead of 1).
        "audio.retry_segment_s=0",
        f"pipeline.decode_actors={args.decode_actors}",
        f"engine.gpu_memory_utilization={args.gpu_share / args.engines:.3f}", *args.set]
    if args.judge:
        judge_dir = build_model(args.judge, args.models_root, args.tokenizer_json)
        # Engines and judge share the GPU: each takes half of it in Ray's accounting.
        overrides = [o.replace(f"engine.gpus_per_engine={1.0 / args.engines}",
                               f"engine.gpus_per_engine={0.5 / args.engines}") for o in overrides]
        overrides += ["judge.enabled=true", "judge.kind=vllm", f"judge.model={judge_dir}",
                      "judge.gpus_per_engine=0.5", "judge.gpu_memory_utilization=0.35",
                      "judge.vllm.load_format=dummy", f"judge.vllm.dtype={dtype_of(args.judge)}",
                      "judge.batch_size=256"]
    subprocess.run([*cli, "plan", *overrides], check=True, env=env, cwd=ROOT)
    log_path = out_dir() / f"e2e-{args.model}-{args.engines}-{args.render_in}{args.tag}.log"
    run = timed_run_shard(overrides, run_dir, env, log_path, args.part_rows, args.limit_s)
    cpu_s = run.decode_cpu_s
    t0, t_end, gpu = run.t0, run.t_end, run.gpu

    # A run stopped at --limit-s is read from its committed parts: a partial figure, marked so
    table = run.table()
    errors = sum(e is not None for e in table.column("error").to_pylist())
    scored = sum(s is not None for s in table.column("score").to_pylist()) \
        if "score" in table.column_names else None
    done = run.completions(args.files)
    first = done[0][0] if done else t_end
    mode = f"b_asrd_run_shard_{args.engines}eng_{args.render_in}{args.tag}"
    fig = figure(args.model, mode, done, first, seconds,
                 args.tokens, gpu, total_wall_s=round(t_end - t0, 1), rows=table.num_rows,
                 error_rows=errors, engines=args.engines, batch=args.batch, calls=args.calls,
                 render_in=args.render_in, decode_actors=_decode_actors(log_path),
                 judge=args.judge, overrides=args.set, scored_rows=scored, packed=args.pack,
                 long_s=args.long_s or None, decode_cpu_s=round(cpu_s, 1),
                 decode_cpu_s_per_audio_s=round(cpu_s / (table.num_rows * seconds), 5),
                 partial_at_limit_s=run.partial_at_limit_s,
                 note="rate from the first committed part (engine start-up excluded)")
    save([fig], out_dir() / "figures.jsonl", device=gpu.name)
    print(f"E2E {args.model} engines={args.engines} render_in={args.render_in}: "
          f"{table.num_rows} rows, {errors} errors, {scored} scored, "
          f"{t_end - t0:.1f} s with start-up"
          f"{' (stopped at the limit)' if run.partial_at_limit_s else ''}",
          flush=True)


@dataclass
class TimedRun:
    """One `asrd run-shard` timed from outside: (time, rows) as parts were committed."""

    done: list[tuple[float, int]]
    t0: float
    t_end: float
    gpu: GpuSampler
    final: Path | None  # None: stopped at the time limit, read the committed parts instead
    parts_dir: Path
    parts: int  # parts seen committed
    part_rows: int
    limit_s: float
    decode_cpu_s: float  # CPU seconds the decode actors' processes used

    @property
    def partial_at_limit_s(self) -> float | None:
        """The limit a stopped run reached (its figure is partial); None once it finished."""
        return self.limit_s if self.final is None else None

    def completions(self, files: int) -> list[tuple[float, int]]:
        """(time, rows) per committed part; a finished run's rows after its last seen part
        completed at its end (a stopped run's did not complete)."""
        rest = files - self.parts * self.part_rows
        if rest > 0 and self.final is not None:
            return [*self.done, (self.t_end, rest)]
        return self.done

    def table(self):
        """The shard's rows: its final file, or the parts committed before the time limit."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.final is not None:
            return pq.read_table(self.final)
        files = sorted(self.parts_dir.glob("part-*.parquet"))
        return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def timed_run_shard(overrides: list[str], run_dir: Path, env: dict[str, str], log_path: Path,
                    part_rows: int, limit_s: float) -> TimedRun:
    """Run shard 0 of a planned run with NVML sampled; progress from its committed parts (so
    the steady rate excludes the engines' start-up). A run still going at `limit_s` is killed
    and returned without its final file; one that failed exits, naming the log."""
    cli = [sys.executable, "-m", "asrd.cli"]
    parts = run_dir / "shards" / "shard-000000.parts"
    final = run_dir / "shards" / "shard-000000.parquet"
    done, seen = [], 0
    cpu = DecodeCpu()
    with open(log_path, "w") as log, GpuSampler() as gpu:
        t0 = time.monotonic()
        proc = subprocess.Popen([*cli, "run-shard", "--shard", "0", *overrides], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        while proc.poll() is None and time.monotonic() - t0 < limit_s:
            n = len(list(parts.glob("part-*.parquet"))) if parts.exists() else 0
            if n > seen:
                done.append((time.monotonic(), (n - seen) * part_rows))
                seen = n
            cpu.sample()
            time.sleep(0.2)
        t_end = time.monotonic()
        stopped = proc.poll() is None
        if stopped:
            proc.kill()
            proc.wait()
    # The final file is committed whole: one written as the run was stopped is a finished run
    if stopped and not final.is_file():
        if not seen:
            raise SystemExit(f"run-shard committed nothing in {limit_s} s; see {log_path}")
        print(f"run-shard did not finish in {limit_s} s; figure from its {seen} committed "
              f"parts; see {log_path}", flush=True)
        return TimedRun(done, t0, t_end, gpu, None, parts, seen, part_rows, limit_s, cpu.total())
    if (not stopped and proc.returncode != 0) or not final.is_file():
        raise SystemExit(f"run-shard failed (rc {proc.returncode}); see {log_path}")
    return TimedRun(done, t0, t_end, gpu, final, parts, seen, part_rows, limit_s, cpu.total())


class DecodeCpu:
    """CPU seconds of the Ray decode actors (process title "ray::Decode..."), sampled
    while they run: the last reading per process counts (a sample period's worth is lost at
    the end of each, ~0.2 s of CPU per actor)."""

    def __init__(self) -> None:
        self.seen: dict[int, float] = {}

    def sample(self) -> None:
        import psutil

        for p in psutil.process_iter(["cmdline"]):
            try:
                cmd = " ".join(p.info["cmdline"] or [])
                if cmd.startswith("ray::") and "Decode" in cmd:
                    t = p.cpu_times()
                    self.seen[p.pid] = t.user + t.system
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue

    def total(self) -> float:
        return sum(self.seen.values())


def _decode_actors(log_path: str | Path) -> int | None:
    """The decode actor count the pipeline logged ("pipeline: N decode actors")."""
    import re

    m = re.search(r"pipeline: (\d+) decode actors", Path(log_path).read_text())
    return int(m.group(1)) if m else None


if __name__ == "__main__":
    main()
    os._exit(0)
