"""The second seed's naive path on the same GPU and audio: Hugging Face Whisper, batch 2.

As in the seed's Ray Data tutorial: the Whisper processor computes log-mel features on the CPU
(`device="cpu"`), then `model.generate` runs in float16 on the GPU, two clips at a time, one
after the other. Random weights of the real size; the output length is fixed (min = max tokens).

    python bench/gpu/transformers_naive.py --model whisper-base --clips 64 --tokens 64
"""

from __future__ import annotations

import os
import time

from common import (SR, GpuSampler, build_model, clips, figure, kind_of, out_dir, save,
                    workload_parser)


def main() -> None:
    ap = workload_parser(64)
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    assert kind_of(args.model) == "whisper", "the seed's path is Whisper"

    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    model_dir = build_model(args.model, args.models_root, args.tokenizer_json)
    processor = WhisperProcessor.from_pretrained(model_dir)
    config = WhisperConfig.from_pretrained(model_dir)
    t0 = time.monotonic()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = WhisperForConditionalGeneration(config).to(torch.float16).eval()
    from transformers import GenerationConfig

    model.generation_config = GenerationConfig.from_pretrained(model_dir)
    startup = time.monotonic() - t0
    audio = clips(args.clips, args.clip_s)

    def run(batch):
        feats = processor(batch, sampling_rate=SR, return_tensors="np", device="cpu").input_features
        x = torch.tensor(feats).to("cuda", dtype=torch.float16)
        with torch.no_grad():
            out = model.generate(x, language="en", task="transcribe", max_new_tokens=args.tokens,
                                 min_new_tokens=args.tokens)
        return processor.batch_decode(out.cpu().numpy(), skip_special_tokens=True)

    run(audio[:args.batch])  # warm-up
    done = []
    with GpuSampler() as gpu:
        t_start = time.monotonic()
        for i in range(0, len(audio), args.batch):
            texts = run(audio[i:i + args.batch])
            assert len(texts) == len(audio[i:i + args.batch])
            done.append((time.monotonic(), len(texts)))
    fig = figure(args.model, f"seed_transformers_batch{args.batch}", done, t_start, args.clip_s,
                 args.tokens, gpu, startup_s=round(startup, 1))
    save([fig], out_dir() / "figures.jsonl", device=gpu.name)


if __name__ == "__main__":
    main()
    os._exit(0)
