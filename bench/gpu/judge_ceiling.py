"""The vLLM judge alone at its ceiling: rows scored per second by a 7B text LLM (random weights,
Qwen2-7B-Instruct's size) through asrd's own VllmJudge (chat template, choice-constrained
decoding), on transcripts of typical length. Compare with the ASR rows/s of the same GPU to see
whether one judge keeps up.

    python bench/gpu/judge_ceiling.py --model qwen2-7b --rows 4096 --words 40
"""

from __future__ import annotations

import json
import random
import time

from common import build_model, dtype_of, out_dir, workload_parser


def main() -> None:
    ap = workload_parser()
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--words", type=int, default=40, help="words per transcript")
    ap.add_argument("--batch", type=int, default=256, help="judge.batch_size")
    ap.add_argument("--gpu-share", type=float, default=0.35)
    args = ap.parse_args()
    from omegaconf import OmegaConf

    from asrd.config import JudgeCfg
    from asrd.engines.judge import VllmJudge

    model_dir = build_model(args.model, args.models_root, args.tokenizer_json)
    cfg = OmegaConf.structured(JudgeCfg)
    cfg.merge_with({"enabled": True, "kind": "vllm", "model": str(model_dir),
                    "batch_size": args.batch, "gpu_memory_utilization": args.gpu_share,
                    "vllm": {"load_format": "dummy", "dtype": dtype_of(args.model)}})
    rng = random.Random(0)
    vocab = ("the of and to in is was for on that with as by at from this be are have it "
             "weather station river music morning garden people office history").split()
    texts = [" ".join(rng.choice(vocab) for _ in range(args.words)) for _ in range(args.rows)]
    t0 = time.monotonic()
    judge = VllmJudge(cfg)
    start_s = time.monotonic() - t0
    judge.score(texts[:args.batch])  # warm up
    t0 = time.monotonic()
    results = judge.score(texts)
    wall = time.monotonic() - t0
    judge.close()
    scored = sum(s is not None for s, _ in results)
    record = {"model": args.model, "rows": args.rows, "words": args.words, "batch": args.batch,
              "scored": scored, "rows_per_s": round(args.rows / wall, 1),
              "startup_s": round(start_s, 1)}
    with open(out_dir() / "judge.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    print("JUDGE", json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
    import os

    os._exit(0)
