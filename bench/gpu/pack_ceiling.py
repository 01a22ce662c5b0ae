"""Packing on the GPU, at the engine's ceiling: short clips one per input vs packed into 30 s
windows (asrd.audio.pack: clips joined with 1 s of silence, the prompt with timestamps).

Every input is rendered first, then all are submitted at once, so the figure is the GPU's rate,
not the pipeline's. Random weights give no real text: output length is fixed (`ignore_eos`) at
`--tokens` per clip, so a window of k clips decodes k times that many tokens (plus two
timestamps per clip) and both ways decode the same number of tokens per clip.

    python bench/gpu/pack_ceiling.py --model whisper-large-v3 --clips 1024 --clip-s 5
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from common import GpuSampler, build_model, clips, dtype_of, out_dir, workload_parser


def main() -> None:
    ap = workload_parser(1024)
    args = ap.parse_args()  # --tokens: each clip's output (by default the rate of real speech)
    import engine_bench
    from vllm.sampling_params import RequestOutputKind, SamplingParams

    from asrd.audio.pack import PackSettings, build_window, plan_windows
    from asrd.engines.base import Segment
    from asrd.engines.vllm_engine import VllmEngine

    model_dir = str(build_model(args.model, args.models_root, args.tokenizer_json))
    cfg = engine_bench.engine_config(model_dir, dtype_of(args.model), args.tokens, 0.85,
                                     1.0, {"max_num_seqs": 512, "max_num_batched_tokens": 96000})
    engine = VllmEngine(cfg)
    audio = clips(args.clips, args.clip_s)
    segs = [Segment(a, "en") for a in audio]
    groups = plan_windows([args.clip_s] * len(segs), PackSettings())
    windows = [Segment(build_window([audio[i] for i in g], 16000, 1.0)[0], "en") for g in groups]
    per_window = max(len(g) for g in groups)

    async def render(items, timestamps, prefix):
        return await asyncio.gather(*(engine.render(s, f"{prefix}-{i}", timestamps)
                                      for i, s in enumerate(items)))

    def run(inputs, max_tokens, prefix) -> float:
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True,
                                detokenize=False, output_kind=RequestOutputKind.FINAL_ONLY)

        async def one(inp, rid):
            async for _ in engine._llm.generate({**inp, "arrival_time": time.time()}, params, rid):
                pass

        async def all_at_once():
            await asyncio.gather(*(one(inp, f"{prefix}-{i}") for i, inp in enumerate(inputs)))

        t0 = time.monotonic()
        engine.submit(all_at_once()).result()
        return time.monotonic() - t0

    engine.transcribe(segs[:8])  # warm up
    alone_in = engine.submit(render(segs, False, "a")).result()
    packed_in = engine.submit(render(windows, True, "p")).result()
    total = len(segs) * args.clip_s
    results = {}
    with GpuSampler() as gpu:
        t = time.monotonic()
        alone_s = run(alone_in, args.tokens, "ra")
        util_a = gpu.mean_util(t, time.monotonic())
        t = time.monotonic()
        packed_s = run(packed_in, per_window * (args.tokens + 2), "rp")
        util_p = gpu.mean_util(t, time.monotonic())
    results = {"model": args.model, "clips": len(segs), "clip_s": args.clip_s,
               "windows": len(windows), "clips_per_window": per_window,
               "alone_audio_s_per_s": round(total / alone_s, 1),
               "packed_audio_s_per_s": round(total / packed_s, 1),
               "ratio": round(alone_s / packed_s, 2), "gpu_util_alone": util_a,
               "gpu_util_packed": util_p}
    print("PACK", json.dumps(results), flush=True)
    with open(out_dir() / "pack_ceiling.jsonl", "a") as f:
        f.write(json.dumps(results) + "\n")
    engine.close()
    os._exit(0)


if __name__ == "__main__":
    main()
