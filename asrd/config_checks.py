"""The value limits the config schema's types cannot express, checked when a config loads.

Ranges of single keys and limits between keys (a segment longer than the model's window, a packed
clip longer than its window), so that a wrong value fails on the login node, naming the key,
rather than on a GPU node an hour into an array.
"""

from __future__ import annotations

from collections.abc import Iterator

from omegaconf import DictConfig

from asrd.quality.presets import PRESETS, is_preset_file

# The longest audio one model call takes: Whisper and Qwen2-Audio see 30 s windows (the vllm and
# transformers engines refuse longer input). faster-whisper cuts a longer segment itself.
MODEL_WINDOW_S = {"vllm": 30.0, "transformers": 30.0}

WANDB_MODES = ("online", "offline", "disabled")
EXECUTORS = ("slurm", "local")
JUDGE_KINDS = ("transformers", "vllm")
RENDER_PLACES = ("decode", "engine")
FEATURE_DEVICES = ("cuda", "cpu")
VLLM_DTYPES = ("auto", "float16", "bfloat16", "float32")
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
# vLLM 0.25.0's attention kernels for these models on NVIDIA GPUs (None: vLLM picks)
ATTENTION_BACKENDS = (None, "FLASH_ATTN", "TRITON_ATTN", "FLASHINFER", "FLEX_ATTENTION")
PROMPT_MAKERS = ("auto", "model")  # engine.vllm.prompts: asrd's own where it has them | the class's
IDENTIFIER_KINDS = ("faster_whisper", "vllm")  # language_id.kind
EXPORT_FORMATS = ("hf", "webdataset", "lhotse")
EXPORT_AUDIO = ("flac16k", "original")

Problem = tuple[str, str]  # (dotted key, why its value is refused)


def problems(cfg: DictConfig) -> Iterator[Problem]:
    """Every (key, why) whose value is out of range or inconsistent with another key."""
    from asrd.engines.registry import engine_kinds  # imports no engine

    yield from _ranges(cfg)
    if ":" not in str(_value(cfg, "engine.kind")):  # a plug-in class is checked when it loads
        yield from _one_of(cfg, "engine.kind", engine_kinds())
    yield from _one_of(cfg, "wandb.mode", WANDB_MODES)
    yield from _one_of(cfg, "slurm.executor", EXECUTORS)
    yield from _one_of(cfg, "judge.kind", JUDGE_KINDS)
    yield from _one_of(cfg, "engine.vllm.render_in", RENDER_PLACES)
    yield from _one_of(cfg, "engine.vllm.feature_device", FEATURE_DEVICES)
    yield from _one_of(cfg, "judge.vllm.dtype", VLLM_DTYPES)
    yield from _one_of(cfg, "engine.vllm.kv_cache_dtype", KV_CACHE_DTYPES)
    yield from _one_of(cfg, "engine.vllm.prompts", PROMPT_MAKERS)
    yield from _one_of(cfg, "engine.vllm.attention_backend", ATTENTION_BACKENDS)
    yield from _one_of(cfg, "export.format", EXPORT_FORMATS)
    yield from _one_of(cfg, "export.audio", EXPORT_AUDIO)
    yield from _one_of(cfg, "language_id.kind", IDENTIFIER_KINDS)
    if not is_preset_file(str(_value(cfg, "merge.preset"))):  # a file is read at merge
        yield from _one_of(cfg, "merge.preset", tuple(PRESETS))
    yield from _cross(cfg)


# key -> (lowest, highest, whether the lowest is allowed); None: no bound on that side.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "run.num_shards": (1, None, True),
    "audio.sample_rate": (0, None, False),
    "language_id.min_p": (0, 1, True),
    "language_id.max_new_tokens": (1, None, True),
    "language_id.gpu_memory_utilization": (0, 1, False),
    "audio.max_segment_s": (0, 3600, False),
    "audio.retry_segment_s": (0, None, True),
    "audio.max_duration_s": (0, None, False),
    "audio.read_retries": (0, None, True),
    "audio.vad.threshold": (0, 1, False),
    "audio.vad.min_speech_ms": (0, None, True),
    "audio.vad.min_silence_ms": (0, None, True),
    "audio.vad.speech_pad_ms": (0, None, True),
    "audio.pack.max_clip_s": (0, None, False),
    "audio.pack.gap_s": (0, None, True),
    "engine.batch_size": (1, None, True),
    "engine.max_new_tokens": (1, None, True),
    "engine.beam_size": (1, None, True),
    "engine.temperature": (0, None, True),
    "engine.num_engines": (1, None, True),
    "engine.gpus_per_engine": (0, None, True),
    "engine.cpus_per_engine": (0, None, False),
    "engine.tensor_parallel_size": (1, None, True),
    "engine.gpu_memory_utilization": (0, 1, False),
    "engine.max_model_len": (1, None, True),
    "engine.calls_in_flight": (1, None, True),
    "engine.vllm.stats_every_s": (0, None, True),
    "engine.vllm.render_threads": (1, None, True),
    "engine.vllm.max_concurrency": (1, None, True),
    "engine.vllm.max_num_seqs": (1, None, True),
    "engine.vllm.max_num_batched_tokens": (1, None, True),
    "engine.vllm.max_restarts": (0, None, True),
    "pipeline.decode_actors": (0, None, True),
    "pipeline.items_per_decode_task": (1, None, True),
    "pipeline.decode_in_flight": (0, None, True),
    "pipeline.part_rows": (1, None, True),
    "pipeline.part_seconds": (0, None, True),
    "pipeline.engine_retries": (0, None, True),
    "pipeline.decode_retries": (0, None, True),
    "pipeline.ray_object_store_mb": (0, None, True),
    "pipeline.log_every_s": (0, None, True),
    "slurm.time_min": (1, None, True),
    "slurm.nodes": (1, None, True),
    "slurm.gpus_per_node": (0, None, True),
    "slurm.cpus_per_task": (1, None, True),
    "slurm.mem_gb": (0, None, False),
    "slurm.shards_per_task": (1, None, True),
    "slurm.array_parallelism": (1, None, True),
    "slurm.signal_delay_s": (0, None, True),
    "slurm.max_requeues": (0, None, True),
    "store.cache_gb": (0, None, False),
    "wandb.log_every_s": (0, None, True),
    "wandb.sample_rows": (0, None, True),
    "monitoring.port": (0, 65535, True),
    "monitoring.every_s": (0, None, True),
    "merge.target_file_mb": (0, None, False),
    "export.shard_mb": (0, None, False),
    "export.window_s": (0, 30, False),
    "export.workers": (1, None, True),
    "export.batch_rows": (1, None, True),
    "judge.max_text_chars": (1, None, True),
    "judge.batch_size": (1, None, True),
    "judge.num_engines": (1, None, True),
    "judge.gpus_per_engine": (0, None, True),
    "judge.gpu_memory_utilization": (0, 1, False),
    "judge.vllm.max_model_len": (1, None, True),
    "quality.ngram": (1, None, True),
}


def _value(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def _ranges(cfg: DictConfig) -> Iterator[Problem]:
    for key, (low, high, low_ok) in RANGES.items():
        v = _value(cfg, key)
        if v is None:  # optional keys: null means "the default"
            continue
        if low is not None and (v < low or (v == low and not low_ok)):
            yield key, f"must be {'>=' if low_ok else '>'} {low}"
        elif high is not None and v > high:
            yield key, f"must be <= {high}"


def _one_of(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> Iterator[Problem]:
    if _value(cfg, key) not in allowed:
        yield key, f"must be one of {allowed}"


def model_window_s(cfg: DictConfig) -> float | None:
    """The longest segment the configured engine takes in one call; None: no limit."""
    kind = _checked_as(cfg)
    return MODEL_WINDOW_S.get("vllm" if kind and _is_vllm(kind) else kind)


def _checked_as(cfg: DictConfig) -> str:
    """The engine kind whose limits hold (a wrapping engine's: the wrapped one's)."""
    from asrd.engines.registry import EngineUnavailable, engine_class

    try:
        return engine_class(cfg.engine.kind).checked_as(cfg.engine)
    except EngineUnavailable:
        return str(cfg.engine.kind)  # an unknown or broken plug-in is refused when it is built


def _is_vllm(kind: str) -> bool:
    from asrd.engines.registry import EngineUnavailable, is_vllm

    try:
        return is_vllm(kind)
    except EngineUnavailable:
        return False  # an unknown or broken plug-in is refused when the engine is built


def _cross(cfg: DictConfig) -> Iterator[Problem]:
    audio, engine = cfg.audio, cfg.engine
    window = model_window_s(cfg)
    if window is not None and audio.max_segment_s > window:
        yield ("audio.max_segment_s", f"longer than the {window:.0f} s window the model of "
               f"engine.kind={engine.kind} takes in one call")
    if audio.pack.enabled and audio.pack.max_clip_s > audio.max_segment_s:
        yield ("audio.pack.max_clip_s", f"longer than the packing window, audio.max_segment_s="
               f"{audio.max_segment_s} (a clip longer than that cannot be packed)")
    if audio.retry_segment_s >= audio.max_segment_s:
        yield ("audio.retry_segment_s", f"must be shorter than audio.max_segment_s="
               f"{audio.max_segment_s} (it is the second try's shorter segment; 0: none)")
    if audio.vad.enabled and audio.sample_rate != 16000:
        yield "audio.sample_rate", "must be 16000 with audio.vad.enabled (the VAD model's rate)"
    uses_vllm = _is_vllm(_checked_as(cfg))
    lid = cfg.language_id
    if lid.enabled and lid.kind == "vllm" and (
            engine.gpu_memory_utilization + lid.gpu_memory_utilization > 0.95):
        yield ("language_id.gpu_memory_utilization", "with engine.gpu_memory_utilization="
               f"{engine.gpu_memory_utilization} over 0.95 of the GPU: the identifier's vLLM "
               "shares the engine's GPU in its actor; lower one of them")
    if uses_vllm and engine.beam_size != 1:
        yield "engine.beam_size", "must be 1 with engine.kind=vllm (greedy or sampling only)"
    if (uses_vllm and str(engine.vllm.kv_cache_dtype).startswith("fp8")
            and engine.compute_type != "bfloat16"):
        # vLLM 0.25's FlashAttention refuses it at the first step ("For FP8 input, output must
        # have dtype BF16"), after the whole engine start-up.
        yield ("engine.vllm.kv_cache_dtype", "an fp8 KV cache needs engine.compute_type=bfloat16 "
               f"(not {engine.compute_type}): vLLM's FlashAttention writes fp8 attention out as "
               "bfloat16 only")
    if 0 < engine.gpus_per_engine < 1 and engine.tensor_parallel_size > 1:
        yield ("engine.tensor_parallel_size", "must be 1 when engines share a GPU "
               "(engine.gpus_per_engine < 1)")
    if cfg.export.windows and cfg.export.audio != "flac16k":
        yield "export.audio", "must be flac16k with export.windows (windows are cut from decoded audio)"
    if cfg.judge.enabled and not cfg.judge.model:
        yield "judge.model", "must be set when judge.enabled (a local text LLM directory)"
    judge = cfg.judge
    shared = (uses_vllm and judge.enabled and judge.kind == "vllm"
              and 0 < engine.gpus_per_engine < 1 and 0 < judge.gpus_per_engine < 1)
    if shared and engine.gpu_memory_utilization + judge.gpu_memory_utilization > 0.95:
        yield ("judge.gpu_memory_utilization", "with engine.gpu_memory_utilization="
               f"{engine.gpu_memory_utilization} it asks for more than 95% of the GPU the "
               "engines and the judge share: lower one of them")
