"""(a) The naive use of vLLM: one `LLM.generate` over raw clips.

The offline class prepares every clip's input (the processor's log-mel features) on one CPU core
before the engine gets it; this is the baseline the pipeline has to beat.

    python bench/gpu/naive_vllm.py --model whisper-base --clips 512 --clip-s 20 --tokens 64
"""

from __future__ import annotations

import os
import time

from common import (SR, GpuSampler, build_model, clips, dtype_of, figure, kind_of, out_dir,
                    save, workload_parser)


def main() -> None:
    ap = workload_parser(512)
    ap.add_argument("--gpu-mem", type=float, default=0.85)
    args = ap.parse_args()

    from vllm import LLM, SamplingParams

    model_dir = build_model(args.model, args.models_root, args.tokenizer_json)
    kind = kind_of(args.model)
    t0 = time.monotonic()
    llm = LLM(model=str(model_dir), load_format="dummy", dtype=dtype_of(args.model),
              gpu_memory_utilization=args.gpu_mem, limit_mm_per_prompt={"audio": 1},
              max_model_len=448 if kind == "whisper" else None, seed=0)
    startup = time.monotonic() - t0
    if kind == "whisper":
        text = "<|startoftranscript|><|en|><|transcribe|><|notimestamps|>"
    else:
        text = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                "Audio 1: <|audio_bos|><|AUDIO|><|audio_eos|>\nTranscribe the speech verbatim."
                "<|im_end|>\n<|im_start|>assistant\n")
    audio = clips(args.clips, args.clip_s)
    # Unique ids: the clips repeat (to save memory), and repeated audio would hit vLLM's
    # prefix and encoder caches (Qwen2-Audio), which real corpora never do.
    prompts = [{"prompt": text, "multi_modal_data": {"audio": (a, SR)},
                "multi_modal_uuids": {"audio": [f"naive-{i}"]}} for i, a in enumerate(audio)]
    params = SamplingParams(temperature=0.0, max_tokens=args.tokens, ignore_eos=True)
    llm.generate(prompts[:8], params, use_tqdm=False)  # warm-up
    with GpuSampler() as gpu:
        t_start = time.monotonic()
        outs = llm.generate(prompts, params, use_tqdm=False)
        t_end = time.monotonic()
    assert len(outs) == len(prompts) and all(len(o.outputs[0].token_ids) == args.tokens
                                             for o in outs)
    fig = figure(args.model, "a_naive_llm_generate", [(t_end, len(outs))], t_start, args.clip_s,
                 args.tokens, gpu, startup_s=round(startup, 1))
    fig.steady_audio_s_per_s = None  # one completion time only: no steady window
    fig.steady_gpu_util = fig.gpu_util_all
    save([fig], out_dir() / "figures.jsonl", device=gpu.name)
    print(f"STARTUP {args.model} LLM {startup:.1f} s", flush=True)
    llm.llm_engine.engine_core.shutdown()


if __name__ == "__main__":
    main()
    os._exit(0)  # vLLM's atexit hooks can hang an offline script
