"""Where the GPU's time goes inside one vLLM engine: a torch profiler trace of a window of engine
steps, fed as asrd's engine actor feeds it (`--callers` threads of `--batch` segments each), then
summarized by bench/gpu/profile_summary.py (encoder, decoder eager by module, decoder CUDA graphs,
sampling; steps with and without the encoder).

The trace records every Python frame of the engine's process, which slows its CPU side: kernel
times and their shares hold, the rate and GPU-busy figures of the profiled window do not.

    python bench/gpu/profile_engine.py --model whisper-large-v3 --clips 1024 --tokens 90
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from common import GpuSampler, build_model, clips, dtype_of, figure, out_dir, save, \
    workload_parser
from engine_bench import engine_config, render_all, run_callers, submit_all
from profile_summary import kernel_table_shares, load_events, summarize


def with_profiler(trace_dir: Path, delay_steps: int, steps: int, stack: bool) -> None:
    """Make every engine built from here on start with vLLM's torch profiler configured."""
    from vllm.config import ProfilerConfig

    import asrd.engines.vllm_engine as vllm_engine

    plain = vllm_engine.engine_args

    def profiled(engine_cfg, whisper):
        args = plain(engine_cfg, whisper)
        args.profiler_config = ProfilerConfig(
            profiler="torch", torch_profiler_dir=str(trace_dir), torch_profiler_with_stack=stack,
            ignore_frontend=True, delay_iterations=delay_steps, max_iterations=steps)
        return args

    vllm_engine.engine_args = profiled
    os.environ["VLLM_CUSTOM_SCOPES_FOR_PROFILING"] = "1"  # "gpu_model_runner: forward" etc.


def new_trace(trace_dir: Path, before: set[Path], wait_s: float = 120.0) -> Path | None:
    """The trace file the worker wrote after `before` was listed (it writes it on stop)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        new = sorted(set(trace_dir.rglob("*.pt.trace.json*")) - before)
        if new:
            size = -1
            while new[0].stat().st_size != size:  # still being written
                size = new[0].stat().st_size
                time.sleep(1.0)
            return new[0]
        time.sleep(1.0)
    return None


def main() -> None:
    ap = workload_parser(1024)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--callers", type=int, default=16)
    ap.add_argument("--gpu-mem", type=float, default=0.85)
    ap.add_argument("--delay-steps", type=int, default=150,
                    help="engine steps after the feed starts before the trace does")
    ap.add_argument("--steps", type=int, default=12,
                    help="engine steps traced (with Python frames, a traced step takes seconds)")
    ap.add_argument("--feeds", default="callers,ceiling",
                    help="callers: transcribe from --callers threads (the engine actor's "
                    "feed); ceiling: every input rendered first, then all submitted at once")
    ap.add_argument("--no-stack", action="store_true",
                    help="no Python frames in the trace (smaller; no per-module split)")
    args = ap.parse_args()

    from asrd.engines.base import Segment
    from asrd.engines.vllm_engine import VllmEngine

    trace_dir = out_dir() / "traces"
    trace_dir.mkdir(parents=True, exist_ok=True)
    with_profiler(trace_dir.resolve(), args.delay_steps, args.steps, not args.no_stack)
    model_dir = build_model(args.model, args.models_root, args.tokenizer_json)
    cfg = engine_config(model_dir, dtype_of(args.model), args.tokens, args.gpu_mem, 1.0,
                        {"max_concurrency": args.callers})
    engine = VllmEngine(cfg)
    print(f"STARTUP {args.model} VllmEngine {engine.startup_s:.1f} s", flush=True)
    segs = [Segment(a, None) for a in clips(args.clips, args.clip_s)]
    engine.transcribe(segs[:16])  # warm up
    results = []
    with GpuSampler() as gpu:
        for feed in args.feeds.split(","):
            before = set(trace_dir.rglob("*.pt.trace.json*"))
            rendered = render_all(engine, segs, f"p{feed}") if feed == "ceiling" else None
            engine.submit(engine._llm.start_profile()).result()
            if feed == "ceiling":
                done, t_start = submit_all(engine, rendered, f"p{feed}")
            else:
                done, t_start = run_callers(engine, segs, args.batch, args.callers)
            engine.submit(engine._llm.stop_profile()).result()
            fig = figure(args.model, f"profiled_{feed}", done, t_start, args.clip_s,
                         args.tokens, gpu)
            save([fig], out_dir() / "figures.jsonl", device=gpu.name, traced=True)
            path = new_trace(trace_dir, before)
            for table in trace_dir.glob("profiler_out_*.txt"):  # vLLM's kernel table: cheap
                kept = out_dir() / f"profile-{args.model}-{feed}-{table.name}"
                table.rename(kept)
                kinds = kernel_table_shares(kept)
                total = sum(kinds.values()) or 1.0
                print(f"PROFILE {feed} kernel table: " + ", ".join(
                    f"{k} {v:.3f} s ({v / total:.1%})" for k, v in kinds.items()), flush=True)
            if path is None:
                print(f"PROFILE {feed}: no trace written", flush=True)
                continue
            summary = summarize(load_events(path))
            record = {"model": args.model, "feed": feed, "clip_s": args.clip_s,
                      "tokens": args.tokens, "delay_steps": args.delay_steps,
                      "steps_traced": args.steps, "trace_mb": round(path.stat().st_size / 1e6, 1),
                      "shares": summary.shares(), **summary.__dict__}
            results.append(record)
            print(f"PROFILE {feed}: steps {summary.steps} ({summary.encoder_steps} with the "
                  f"encoder), mean GPU ms per step {summary.step_gpu_ms}, kernels busy "
                  f"{summary.busy_ms:.0f} of {summary.span_ms:.0f} ms (traced, so slower)",
                  flush=True)
            for cls, share in summary.shares().items():
                top = "; ".join(f"{n} {ms:.1f}" for n, ms in summary.top_kernels[cls][:3])
                print(f"PROFILE {feed} {cls}: {summary.kernel_ms[cls]:.1f} ms, {share:.1%} "
                      f"({top})", flush=True)
            path.unlink()  # large; the summary is what comes back
    (out_dir() / f"profile-{args.model}.json").write_text(json.dumps(results, indent=1))
    engine.close()


if __name__ == "__main__":
    main()
    os._exit(0)
