"""Several engines on one GPU (each in its own process, as Ray engine actors are) against one.

Each process builds a VllmEngine with gpus_per_engine=1/E (so its memory share is 1/E of the
budget; starts are serialised by the engine's per-GPU lock), waits at a barrier, then feeds its
share of the clips through `transcribe` from several threads. The parent samples the GPU.
With `--ceiling`, each process renders all its inputs before the barrier and then submits them
at once: the GPU-only ceiling of E engines on one GPU.

    python bench/gpu/multi_engine.py --model whisper-base --engines 2 --clips 2048 [--ceiling]
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

from common import GpuSampler, build_model, clips, dtype_of, figure, out_dir, save, workload_parser


def child(rank: int, args, model_dir: str, barrier, results) -> None:
    import engine_bench
    from asrd.engines.base import Segment
    from asrd.engines.vllm_engine import VllmEngine

    extra = {"render_threads": args.render_threads, "max_concurrency": args.callers,
             "feature_device": args.device}
    cfg = engine_bench.engine_config(model_dir, dtype_of(args.model), args.tokens, args.gpu_mem,
                                     1.0 / args.engines, extra)
    engine = VllmEngine(cfg)
    segs = [Segment(a, None) for a in clips(args.clips // args.engines, args.clip_s, seed=rank)]
    engine.transcribe(segs[:16])
    rendered = engine_bench.render_all(engine, segs, f"c{rank}") if args.ceiling else None
    results.put(("ready", rank, engine.startup_s))
    barrier.wait()
    if rendered is not None:
        done, t0 = engine_bench.submit_all(engine, rendered, f"c{rank}")
    else:
        done, t0 = engine_bench.run_callers(engine, segs, args.batch, args.callers)
    results.put(("done", rank, done))
    engine.close()
    os._exit(0)


def main() -> None:
    ap = workload_parser(2048)
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--callers", type=int, default=16)
    ap.add_argument("--render-threads", type=int, default=6)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--gpu-mem", type=float, default=0.85)
    ap.add_argument("--ceiling", action="store_true")
    args = ap.parse_args()
    model_dir = str(build_model(args.model, args.models_root, args.tokenizer_json))
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(args.engines + 1), ctx.Queue()
    procs = [ctx.Process(target=child, args=(r, args, model_dir, barrier, results))
             for r in range(args.engines)]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    startups = []
    for _ in procs:
        kind, rank, s = results.get(timeout=900)
        startups.append(round(s, 1))
    all_ready = time.monotonic() - t0
    print(f"STARTUP {args.model} {args.engines} engines: each {startups} s, all ready after "
          f"{all_ready:.1f} s", flush=True)
    with GpuSampler() as gpu:
        t_start = time.monotonic()
        barrier.wait()
        done = []
        for _ in procs:
            kind, rank, d = results.get(timeout=900)
            done.extend(d)
    for p in procs:
        p.join(timeout=60)
    mode = "c_ceiling_inputs_ready" if args.ceiling else f"engines_per_gpu_{args.device}"
    fig = figure(args.model, f"{mode}_{args.engines}eng", done, t_start,
                 args.clip_s, args.tokens, gpu, startups_s=startups,
                 all_ready_s=round(all_ready, 1), render_threads=args.render_threads)
    save([fig], out_dir() / "figures.jsonl", device=gpu.name)


if __name__ == "__main__":
    main()
    os._exit(0)
