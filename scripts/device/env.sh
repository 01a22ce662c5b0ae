# Source on the lent GPU machine after scripts/device/setup.sh: the installed wheels and the
# settings vLLM needs there (its FlashInfer sampler and forked workers fail there).
export PYTHONPATH=/tmp/site:$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)${PYTHONPATH:+:$PYTHONPATH}
export PATH=/tmp/site/bin:$PATH
export PYTHONUNBUFFERED=1
# The FlashInfer sampler is not carried; without this the engine dies at start.
export VLLM_USE_FLASHINFER_SAMPLER=0
# Whisper does not survive forked workers.
export VLLM_WORKER_MULTIPROC_METHOD=spawn
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
# NVLink multicast off (KINDS.md): harmless on one GPU, required on several.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
