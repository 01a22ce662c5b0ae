"""The configuration schema (OmegaConf structured dataclasses), loading, overrides and hashing.

One schema so that a wrong key or value fails at load time, naming the key, rather than an hour
into a SLURM array.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the offending key."""


@dataclass
class RunCfg:
    name: str = "asrd"
    dir: str = "runs/asrd"  # the run directory, on the shared store in production
    index: str = MISSING  # the Parquet index made by `asrd index`
    num_shards: int = 1


@dataclass
class VadCfg:
    """Voice activity detection (Silero): only speech reaches the model."""

    enabled: bool = True
    threshold: float = 0.5  # speech probability above which a frame is speech
    min_speech_ms: int = 250  # shorter speech is dropped (clicks, coughs)
    min_silence_ms: int = 500  # a pause at least this long ends a speech region
    speech_pad_ms: int = 300  # kept on each side of a region, so that word edges stay


@dataclass
class PackCfg:
    """Short clips packed into full windows, for engines that split text back by timestamps
    (faster-whisper); other engines transcribe every clip alone."""

    enabled: bool = True
    max_clip_s: float = 15.0  # longer clips are transcribed alone
    gap_s: float = 1.0  # silence between two clips of a window


@dataclass
class AudioCfg:
    sample_rate: int = 16000
    max_segment_s: float = 30.0  # Whisper and Qwen2-Audio accept at most 30 s per input
    vad: VadCfg = field(default_factory=VadCfg)
    pack: PackCfg = field(default_factory=PackCfg)
    max_duration_s: float = 6 * 3600.0  # longer recordings become error rows ("too long")
    read_retries: int = 2  # re-reads of a path that failed with an I/O error


@dataclass
class EngineCfg:
    kind: str = "faster_whisper"  # faster_whisper | transformers | vllm (| fault: tests)
    model: str = "whisper-base"  # a local model directory, or "whisper-base" (the PyPI package)
    device: str = "cpu"  # cpu | cuda
    compute_type: str = "int8"  # faster-whisper: int8 | float16 | float32; transformers: dtype
    batch_size: int = 8  # segments per engine call
    language: Optional[str] = "en"  # None lets the model detect it
    task: str = "transcribe"
    instruction: str = "Transcribe the speech verbatim. Output only the transcript."
    system_prompt: Optional[str] = None
    max_new_tokens: int = 128
    beam_size: int = 1
    temperature: float = 0.0
    num_engines: int = 1  # engine actors per node (several per GPU when gpus_per_engine < 1)
    gpus_per_engine: float = 0.0
    cpus_per_engine: float = 1.0
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.85
    max_model_len: Optional[int] = None
    load_format: str = "auto"  # "dummy" builds random weights from config.json (benchmarks)
    ignore_eos: bool = False  # benchmarks: fixed output length
    calls_in_flight: int = 2  # engine calls queued per engine actor, so it never runs dry
    extra: dict[str, Any] = field(default_factory=dict)  # engine-specific keyword arguments


@dataclass
class PipelineCfg:
    decode_actors: int = 0  # 0: one per CPU left after the engines
    items_per_decode_task: int = 8
    decode_in_flight: int = 0  # 0: 2 x decode_actors
    part_rows: int = 256  # rows per committed part (the in-shard checkpoint)
    part_seconds: float = 120.0  # also commit a part at least this often
    engine_retries: int = 2  # retries of a failed engine call (split in halves) before error rows
    decode_retries: int = 2  # retries of items whose decode actor died
    ray_object_store_mb: int = 0  # 0: Ray's default
    ray_tmp: str = ""  # "": node-local temp dir from SLURM_TMPDIR/TMPDIR, else /tmp
    log_every_s: float = 30.0


@dataclass
class SlurmCfg:
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    time_min: int = 240
    nodes: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 2
    mem_gb: float = 4.0
    constraint: Optional[str] = None
    exclusive: bool = False
    shards_per_task: int = 1
    array_parallelism: int = 256
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: checkpoint and requeue
    max_requeues: int = 3
    extra_sbatch: list[str] = field(default_factory=list)  # extra "#SBATCH" lines
    setup: list[str] = field(default_factory=list)  # shell lines run before the task
    env: dict[str, str] = field(default_factory=dict)
    executor: str = "slurm"  # slurm | local (submitit's local executor, for trying it out)


@dataclass
class StoreCfg:
    require_mount: Optional[str] = None  # a mount point that must be mounted before a task writes
    cache_dir: Optional[str] = None  # node-local audio cache; None: off
    cache_gb: float = 50.0


@dataclass
class WandbCfg:
    mode: str = "disabled"  # online | offline | disabled
    project: str = "asrd"
    entity: Optional[str] = None
    dir: Optional[str] = None  # default: RUN_DIR/wandb
    log_every_s: float = 10.0
    sample_rows: int = 16  # transcripts (with audio) shown in the merge run


@dataclass
class MergeCfg:
    target_file_mb: float = 256.0
    filter: Optional[str] = None  # e.g. "score >= 3"
    allow_incomplete: bool = False


@dataclass
class JudgeCfg:
    enabled: bool = False
    kind: str = "transformers"  # transformers | vllm
    model: str = ""
    device: str = "cpu"
    system_prompt: str = "You rate transcripts of speech."
    user_template: str = (
        "Rate how plausible this transcript of real speech is, from 1 (garbage) to 5 "
        "(fluent, natural). Answer with one digit.\nTranscript: {text}"
    )
    choices: list[str] = field(default_factory=lambda: ["1", "2", "3", "4", "5"])
    batch_size: int = 16
    num_engines: int = 1
    gpus_per_engine: float = 0.0
    gpu_memory_utilization: float = 0.3
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class FaultCfg:
    """Faults injected on purpose, so that tests drive every fault path without clocks or signals.

    The engine hooks act when `engine.kind=fault` (which wraps `inner`); the decode hook acts with
    any engine. All are off by default."""

    inner: Optional[str] = None  # the engine kind the fault engine wraps; None: text made from the audio
    fail_ids: list[str] = field(default_factory=list)  # engine calls holding these rows raise
    raise_on_calls: list[int] = field(default_factory=list)  # these calls (1-based, per actor) raise
    exit_after_calls: int = 0  # the engine actor exits on the call after this many (once per state_dir)
    block_after_calls: int = -1  # later calls wait until `release_file` exists; -1: never block
    release_file: Optional[str] = None
    call_delay_s: float = 0.0  # every engine call takes at least this long
    decode_exit_ids: list[str] = field(default_factory=list)  # a decode actor exits on these rows
    unplaceable_ids: list[str] = field(default_factory=list)  # packed: these rows' words unplaced
    kill_at: Optional[str] = None  # the process SIGKILLs itself at this named point (faults.POINTS)
    hold_at: Optional[str] = None  # ... or waits there until `release_file` exists
    state_dir: Optional[str] = None  # where the hooks log what they did (tests read it)


@dataclass
class Config:
    run: RunCfg = field(default_factory=RunCfg)
    audio: AudioCfg = field(default_factory=AudioCfg)
    engine: EngineCfg = field(default_factory=EngineCfg)
    pipeline: PipelineCfg = field(default_factory=PipelineCfg)
    slurm: SlurmCfg = field(default_factory=SlurmCfg)
    store: StoreCfg = field(default_factory=StoreCfg)
    wandb: WandbCfg = field(default_factory=WandbCfg)
    merge: MergeCfg = field(default_factory=MergeCfg)
    judge: JudgeCfg = field(default_factory=JudgeCfg)
    faults: FaultCfg = field(default_factory=FaultCfg)


# The hashed/run-only split. OUTPUT_KEYS change the rows a run writes (model, prompt, decoding,
# audio and segmentation, judge): the config hash covers exactly these, and a resubmission or merge
# with a different value is refused as config drift, naming the key. RUN_KEYS say where and how
# the run executes (engines, GPUs, batching, pipeline sizing, SLURM, store, tracking, faults):
# they may change between resubmits. An entry names a key or a whole section; every key of the
# schema is under exactly one entry of the two (tests/test_config.py checks it), so a new key must
# be classified here. A new output-relevant section (e.g. quality) is added to OUTPUT_KEYS whole.
OUTPUT_KEYS = (
    "run.index", "run.num_shards",
    "audio.sample_rate", "audio.max_segment_s", "audio.vad", "audio.pack", "audio.max_duration_s",
    "engine.kind", "engine.model", "engine.compute_type", "engine.language", "engine.task",
    "engine.instruction", "engine.system_prompt", "engine.max_new_tokens", "engine.beam_size",
    "engine.temperature", "engine.load_format", "engine.ignore_eos", "engine.extra",
    "judge.enabled", "judge.kind", "judge.model", "judge.system_prompt", "judge.user_template",
    "judge.choices", "judge.extra",
)
RUN_KEYS = (
    "run.name", "run.dir",
    "audio.read_retries",
    "engine.device", "engine.batch_size", "engine.num_engines", "engine.gpus_per_engine",
    "engine.cpus_per_engine", "engine.tensor_parallel_size", "engine.gpu_memory_utilization",
    "engine.max_model_len", "engine.calls_in_flight",
    "judge.device", "judge.batch_size", "judge.num_engines", "judge.gpus_per_engine",
    "judge.gpu_memory_utilization",
    "pipeline", "slurm", "store", "wandb", "merge", "faults",
)
FREE_FORM_MAPS = ("engine.extra", "judge.extra", "slurm.env")  # keys chosen by the user: one value

WANDB_MODES = ("online", "offline", "disabled")


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> DictConfig:
    """Schema defaults <- YAML file <- `key=value` overrides, validated."""
    try:
        cfg = OmegaConf.structured(Config)
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file not found: {p}")
            cfg = OmegaConf.merge(cfg, OmegaConf.load(p))
        if overrides:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(f"invalid config key {key!r}: {e.msg if hasattr(e, 'msg') else e}") from e
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Checks the schema's types cannot express."""
    from asrd.engines.registry import engine_kinds  # imports no engine

    checks = [
        (cfg.run.num_shards >= 1, "run.num_shards", "must be >= 1"),
        (cfg.engine.kind in engine_kinds(), "engine.kind", f"must be one of {engine_kinds()}"),
        (cfg.wandb.mode in WANDB_MODES, "wandb.mode", f"must be one of {WANDB_MODES}"),
        (0 < cfg.audio.max_segment_s <= 3600, "audio.max_segment_s", "must be in (0, 3600]"),
        (cfg.audio.sample_rate > 0, "audio.sample_rate", "must be > 0"),
        (not cfg.audio.vad.enabled or cfg.audio.sample_rate == 16000, "audio.sample_rate",
         "must be 16000 with audio.vad.enabled (the VAD model's rate)"),
        (0 < cfg.audio.vad.threshold < 1, "audio.vad.threshold", "must be in (0, 1)"),
        (cfg.engine.batch_size >= 1, "engine.batch_size", "must be >= 1"),
        (cfg.engine.num_engines >= 1, "engine.num_engines", "must be >= 1"),
        (cfg.engine.calls_in_flight >= 1, "engine.calls_in_flight", "must be >= 1"),
        (cfg.pipeline.part_rows >= 1, "pipeline.part_rows", "must be >= 1"),
        (cfg.slurm.shards_per_task >= 1, "slurm.shards_per_task", "must be >= 1"),
        (cfg.merge.target_file_mb > 0, "merge.target_file_mb", "must be > 0"),
    ]
    for ok, key, why in checks:
        if not ok:
            raise ConfigError(f"invalid config value {key}={OmegaConf.select(cfg, key)!r}: {why}")


def require_index(cfg: DictConfig) -> str:
    """The index path, or a clear error when it was never set."""
    if OmegaConf.is_missing(cfg.run, "index"):
        raise ConfigError("run.index is not set: pass run.index=PATH (made by `asrd index`)")
    return str(cfg.run.index)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg)


def _covered(key: str, entries: tuple[str, ...]) -> bool:
    return any(key == e or key.startswith(e + ".") for e in entries)


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value for every value of a plain config tree; free-form maps stay whole."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key not in FREE_FORM_MAPS:
            out.update(_leaves(v, key + "."))
        else:
            out[key] = v
    return out


def leaf_values(cfg: DictConfig) -> dict[str, Any]:
    """Every key of `cfg` with its value, dotted ("???" where a required key is not set)."""
    return _leaves(OmegaConf.to_container(cfg, resolve=True))


def is_output_key(key: str) -> bool:
    """Whether `key` (dotted) changes the output rows, i.e. is covered by the config hash."""
    return _covered(key, OUTPUT_KEYS)


def output_values(cfg: DictConfig) -> dict[str, Any]:
    """The output-relevant keys and their values: what the config hash covers."""
    return {k: v for k, v in leaf_values(cfg).items() if is_output_key(k)}


def output_diff(old: DictConfig, new: DictConfig) -> list[str]:
    """The output-relevant keys whose values differ between two configs, sorted."""
    a, b = output_values(old), output_values(new)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def config_hash(cfg: DictConfig) -> str:
    """A short hash of the output-relevant keys (OUTPUT_KEYS)."""
    blob = json.dumps(output_values(cfg), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
