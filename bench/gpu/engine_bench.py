"""(c) the GPU-only ceiling and the engine-level rate of asrd's VllmEngine, one engine start.

- start-up: the time `VllmEngine(cfg)` takes (weights, compile, CUDA graphs);
- render: the front end alone (clips/s turned into engine inputs) for each variant;
- ceiling: every clip's input prepared first, then all submitted at once: the rate when inputs
  are ready before the engine starts;
- engine: `transcribe` called from `--callers` threads with `--batch` segments each (what the Ray
  engine actor does), for each front-end variant `DEVICE:THREADS` (render threads; the feature
  device is fixed when the engine starts, so every variant names the first one's device);
- `--signals-ab N`: the quality signals' cost at the ceiling, modes alternating N times.

    python bench/gpu/engine_bench.py --model whisper-base --clips 2048 --variants cuda:8,cuda:1
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from common import (GpuSampler, build_model, clips, dtype_of, figure, kind_of, out_dir, save,
                    workload_parser)


def engine_config(model_dir, dtype: str, tokens: int, gpu_mem: float, gpus_per_engine: float,
                  vllm_options: dict):
    """The engine section; `vllm_options` are engine.vllm.* keys."""
    from asrd import config as config_mod

    cfg = config_mod.load(None, [
        "engine.kind=vllm", f"engine.model={model_dir}", "engine.load_format=dummy",
        f"engine.compute_type={dtype}", "engine.ignore_eos=true", f"engine.max_new_tokens={tokens}",
        "engine.temperature=0.0", f"engine.gpu_memory_utilization={gpu_mem}",
        f"engine.gpus_per_engine={gpus_per_engine}", "engine.language=en",
        *(f"engine.vllm.{k}={v}" for k, v in vllm_options.items())])
    return cfg.engine


def set_variant(engine, threads: int) -> None:
    """A variant's render threads (its device is the engine's, fixed when it starts)."""
    engine._render_slots = asyncio.Semaphore(threads)


def run_callers(engine, segments, batch: int, callers: int) -> tuple[list, float]:
    """`transcribe` from `callers` threads, `batch` segments a call; (done times, start)."""
    batches = [segments[i:i + batch] for i in range(0, len(segments), batch)]
    lock, done = threading.Lock(), []

    def worker():
        while True:
            with lock:
                if not batches:
                    return
                b = batches.pop()
            texts = engine.transcribe(b)
            assert len(texts) == len(b)
            with lock:
                done.append((time.monotonic(), len(b)))

    t0 = time.monotonic()
    with ThreadPoolExecutor(callers) as pool:
        for f in [pool.submit(worker) for _ in range(callers)]:
            f.result()
    return done, t0


def render_all(engine, segs, prefix: str) -> list:
    """Every segment's engine input, made before any is submitted."""
    async def go():
        return await asyncio.gather(*(engine.render(s, f"{prefix}-{i}")
                                      for i, s in enumerate(segs)))

    return engine.submit(go()).result()


def submit_all(engine, rendered: list, prefix: str) -> tuple[list, float]:
    """All ready inputs submitted at once: the ceiling's (done times, start)."""
    done: list = []

    async def timed(inp, rid):
        await engine.generate_rendered(inp, rid)
        done.append((time.monotonic(), 1))

    async def all_at_once():
        await asyncio.gather(*(timed(inp, f"{prefix}-{i}") for i, inp in enumerate(rendered)))

    t_start = time.monotonic()
    engine.submit(all_at_once()).result()
    return done, t_start


def main() -> None:
    ap = workload_parser(2048)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--callers", type=int, default=16)
    ap.add_argument("--render-threads", type=int, default=8)
    ap.add_argument("--variants", default="cuda:8,cpu:8,cpu:1")
    ap.add_argument("--render-clips", type=int, default=256)
    ap.add_argument("--no-ceiling", action="store_true")
    ap.add_argument("--gpu-mem", type=float, default=0.85)
    ap.add_argument("--max-num-seqs", type=int, default=0)
    ap.add_argument("--signals-ab", type=int, default=0, metavar="ROUNDS",
                    help="then ROUNDS of all inputs at once, alternating: no signals, output "
                    "log-probabilities, and those with Whisper's language detection")
    args = ap.parse_args()

    from asrd.engines.base import Segment
    from asrd.engines.vllm_engine import VllmEngine

    model_dir = build_model(args.model, args.models_root, args.tokenizer_json)
    variants = [(v.split(":")[0], int(v.split(":")[1])) for v in args.variants.split(",") if v]
    device = variants[0][0]
    if any(d != device for d, _ in variants):
        raise SystemExit(f"--variants: every variant renders on the engine's device, {device}")
    extra = {"render_threads": args.render_threads, "max_concurrency": args.callers,
             "feature_device": device}
    if args.max_num_seqs:
        extra["max_num_seqs"] = args.max_num_seqs
    cfg = engine_config(model_dir, dtype_of(args.model), args.tokens, args.gpu_mem, 1.0, extra)
    engine = VllmEngine(cfg)
    print(f"STARTUP {args.model} VllmEngine {engine.startup_s:.1f} s", flush=True)
    segs = [Segment(a, None) for a in clips(args.clips, args.clip_s)]
    figs, meta = [], {"startup_s": round(engine.startup_s, 1), "kind": kind_of(args.model)}
    set_variant(engine, args.render_threads)
    engine.transcribe(segs[:16])  # warm up

    render_rates = {}
    for dev, k in variants:
        set_variant(engine, k)
        sub = segs[:args.render_clips]

        async def render_some():
            return await asyncio.gather(*(engine.render(s, f"r{dev}{k}-{i}")
                                          for i, s in enumerate(sub)))

        t0 = time.monotonic()
        engine.submit(render_some()).result()
        render_rates[f"{dev}:{k}"] = round(len(sub) / (time.monotonic() - t0), 1)
        print(f"RENDER {args.model} {dev}:{k} {render_rates[f'{dev}:{k}']} clips/s", flush=True)
    meta["render_clips_per_s"] = render_rates

    with GpuSampler() as gpu:
        if not args.no_ceiling:
            set_variant(engine, args.render_threads)
            rendered = render_all(engine, segs, "c")
            done, t_start = submit_all(engine, rendered, "c")
            figs.append(figure(args.model, "c_ceiling_inputs_ready", done, t_start, args.clip_s,
                               args.tokens, gpu, **meta))
            del rendered
            save(figs[-1:], out_dir() / "figures.jsonl", device=gpu.name)
        for dev, k in variants:
            set_variant(engine, k)
            done, t_start = run_callers(engine, segs, args.batch, args.callers)
            figs.append(figure(args.model, f"engine_transcribe_{dev}_r{k}", done, t_start,
                               args.clip_s, args.tokens, gpu, batch=args.batch,
                               callers=args.callers, **meta))
            save(figs[-1:], out_dir() / "figures.jsonl", device=gpu.name)
        if args.signals_ab:  # inputs ready, as in the ceiling: the GPU and vLLM's output side
            set_variant(engine, args.render_threads)
            rendered = render_all(engine, segs, "ab")
            modes = {"off": (False, False), "logprob": (True, False), "detection": (True, True)}
            for r in range(args.signals_ab):
                for mode, (signals, detection) in modes.items():
                    engine.signals, engine.detection = signals, detection
                    done, t_start = submit_all(engine, rendered, f"ab{r}{mode}")
                    fig = figure(args.model, f"c_ceiling_signals_{mode}", done, t_start,
                                 args.clip_s, args.tokens, gpu, round=r, **meta)
                    figs.append(fig)
                    save([fig], out_dir() / "figures.jsonl", device=gpu.name)
                    print(f"SIGNALS {args.model} round {r} {mode}: {fig.audio_s_per_s} "
                          f"audio-s/s, steady {fig.steady_audio_s_per_s}", flush=True)
    engine.close()


if __name__ == "__main__":
    main()
    os._exit(0)
