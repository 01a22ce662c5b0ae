"""The configuration schema (OmegaConf structured dataclasses), loading, overrides and hashing.

One schema so that a wrong key or value fails at load time, naming the key, rather than an hour
into a SLURM array.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

from asrd import hooks
from asrd.quality.thresholds import Thresholds

log = logging.getLogger("asrd.config")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the offending key."""


@dataclass
class RunCfg:
    """What is transcribed, and where the run directory is."""

    name: str = "asrd"  # the run's name (W&B run names, job names)
    dir: str = "runs/asrd"  # the run directory, on the shared store in production
    index: str = MISSING  # the Parquet index made by `asrd index`
    num_shards: int = 1  # shards the index is cut into, balanced by audio seconds


@dataclass
class VadCfg:
    """Voice activity detection (Silero): only speech reaches the model."""

    enabled: bool = True  # off: whole recordings are cut into max_segment_s pieces instead
    threshold: float = 0.5  # speech probability above which a frame is speech
    min_speech_ms: int = 250  # shorter speech is dropped (clicks, coughs)
    min_silence_ms: int = 500  # a pause at least this long ends a speech region
    speech_pad_ms: int = 300  # kept on each side of a region, so that word edges stay


@dataclass
class PackCfg:
    """Short clips packed into full windows, for engines that split text back by timestamps
    (faster-whisper; vLLM and transformers with a Whisper model); other engines transcribe
    every clip alone."""

    enabled: bool = True  # pack short clips into windows of audio.max_segment_s
    max_clip_s: float = 15.0  # longer clips are transcribed alone
    gap_s: float = 1.0  # silence between two clips of a window


@dataclass
class AudioCfg:
    """Decoding and segmentation: what audio the model sees."""

    sample_rate: int = 16000  # every recording is resampled to this rate
    max_segment_s: float = 30.0  # the longest segment (and packing window) sent to the model
    retry_segment_s: float = 10.0  # a failed long segment's row is redone cut to this; 0: never
    vad: VadCfg = field(default_factory=VadCfg)
    pack: PackCfg = field(default_factory=PackCfg)
    max_duration_s: float = 6 * 3600.0  # longer recordings become error rows ("too long")
    read_retries: int = 2  # re-reads of a path that failed with an I/O error


@dataclass
class VllmEngineCfg:
    """vLLM's own knobs (engine.kind=vllm); defaults measured on an H100 (bench/RESULTS.md)."""

    render_in: str = "decode"  # where engine inputs are made: decode (CPU decode actors) | engine
    render_threads: int = 8  # input-rendering threads in the engine process (GIL-bound past ~8)
    feature_device: str = "cuda"  # where the engine process computes log-mel: cuda | cpu
    max_concurrency: int = 64  # concurrent `transcribe` calls one engine actor may make
    max_num_seqs: Optional[int] = None  # running-batch cap; null: 512 (Whisper), 256 (others)
    max_num_batched_tokens: Optional[int] = None  # tokens per step; null: 96000 Whisper, else 32768
    enforce_eager: bool = False  # skip CUDA graphs (faster start, slower decode)
    # fp8 halves the bytes each decoded token reads; measured no faster for large-v3 on an H200
    kv_cache_dtype: str = "auto"  # auto (the model's dtype) | fp8 (needs bfloat16 weights)
    # a way round a kernel that fails for one model on one GPU
    attention_backend: Optional[str] = None  # FLASH_ATTN | TRITON_ATTN | FLASHINFER | FLEX_ATTENTION; null: vLLM's pick
    # auto: asrd's prompts for Whisper and Qwen2-Audio (signals, packing), the model's own
    # vLLM transcription class's for every other architecture
    prompts: str = "auto"  # who makes the prompts: auto | model (the class's, Whisper's too)
    request_prompt: Optional[str] = None  # text the class puts in its prompt (Qwen3-ASR's context)
    max_restarts: int = 2  # rebuilds of a dead engine before its calls fail
    stats_every_s: float = 30.0  # vLLM's stats line (running/waiting requests, KV use); 0: never
    seed: int = 0  # sampling seed (used when engine.temperature > 0)


@dataclass
class TransformersEngineCfg:
    """Hugging Face transformers' own knobs (engine.kind=transformers)."""

    attn_implementation: Optional[str] = None  # sdpa | eager | flash_attention_2; null: its default


@dataclass
class EngineCfg:
    """The ASR model and how it decodes (output), and how many engines run where (run)."""

    kind: str = "faster_whisper"  # faster_whisper | transformers | vllm (| fault: tests)
    model: str = "whisper-base"  # a local model directory, or "whisper-base" (the PyPI package)
    device: str = "cpu"  # cpu | cuda
    compute_type: str = "int8"  # faster-whisper: int8 | float16 | float32; others: the dtype
    batch_size: int = 8  # segments per engine call
    language: Optional[str] = "en"  # null lets the model detect it
    task: str = "transcribe"  # transcribe | translate (Whisper)
    instruction: str = (  # the audio LLM's prompt (Qwen2-Audio)
        "Transcribe the speech verbatim. Output only the transcript.")
    system_prompt: Optional[str] = None  # audio-LLM system prompt; null: none
    max_new_tokens: int = 128  # longest transcript per segment, in tokens
    beam_size: int = 1  # 1: greedy (vllm decodes greedily or by sampling only)
    temperature: float = 0.0  # 0: deterministic
    num_engines: int = 1  # engine actors per node (several per GPU when gpus_per_engine < 1)
    gpus_per_engine: float = 0.0  # GPUs each engine actor holds; 0: a CPU engine
    cpus_per_engine: float = 1.0  # CPU cores each engine actor holds (its threads)
    tensor_parallel_size: int = 1  # vllm: GPUs one model is split over
    gpu_memory_utilization: float = 0.85  # vllm: share of a GPU's memory (split among its engines)
    max_model_len: Optional[int] = None  # vllm: context length; null: 448 for Whisper, the model's
    load_format: str = "auto"  # vllm: "dummy" builds random weights from config.json (benchmarks)
    ignore_eos: bool = False  # vllm: always write max_new_tokens (benchmarks: fixed output length)
    calls_in_flight: int = 2  # engine calls queued per engine actor, so it never runs dry
    vllm: VllmEngineCfg = field(default_factory=VllmEngineCfg)
    transformers: TransformersEngineCfg = field(default_factory=TransformersEngineCfg)


@dataclass
class PipelineCfg:
    """How one task's actors are sized (Ray, on one node)."""

    decode_actors: int = 0  # 0: one per CPU left after the engines
    items_per_decode_task: int = 8  # recordings per decode call
    decode_in_flight: int = 0  # decode calls queued; 0: 2 x decode_actors
    part_rows: int = 256  # rows per committed part (the in-shard checkpoint)
    part_seconds: float = 120.0  # also commit a part at least this often
    stream_min_s: float = 300.0  # recordings longer than this (s) stream, segments committed as done
    engine_retries: int = 2  # retries of a failed engine call (split in halves) before error rows
    decode_retries: int = 2  # retries of items whose decode actor died
    ray_object_store_mb: int = 0  # 0: Ray's default
    ray_tmp: str = ""  # "": node-local temp dir from SLURM_TMPDIR/TMPDIR, else /tmp
    log_every_s: float = 30.0  # progress log line interval


@dataclass
class SlurmCfg:
    """One array task's SLURM resources and environment."""

    partition: Optional[str] = None  # --partition; null: the cluster's default
    account: Optional[str] = None  # --account
    qos: Optional[str] = None  # --qos
    time_min: int = 240  # --time, minutes
    nodes: int = 1  # nodes per task
    gpus_per_node: int = 0  # --gpus-per-node
    cpus_per_task: int = 2  # --cpus-per-task
    mem_gb: float = 4.0  # --mem, GB
    constraint: Optional[str] = None  # --constraint
    exclusive: bool = False  # --exclusive
    shards_per_task: int = 1  # shards one array task runs, one after another
    array_parallelism: int = 256  # array tasks running at once (%N)
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: checkpoint and requeue
    max_requeues: int = 3  # requeues of a task stopped by its time limit or preemption
    extra_sbatch: list[str] = field(default_factory=list)  # extra "#SBATCH" lines
    setup: list[str] = field(default_factory=list)  # shell lines run before the task (e.g. a mount)
    env: dict[str, str] = field(default_factory=dict)  # environment variables of the task
    executor: str = "slurm"  # slurm | local (submitit's local executor, for trying it out)
    follow_up_sbatch: list[str] = field(default_factory=list)  # extra lines for --until-done's follow-up job (e.g. a CPU partition)


@dataclass
class StoreCfg:
    """The shared store the run directory and audio live on."""

    require_mount: Optional[str] = None  # a mount point that must be mounted before a task writes
    cache_dir: Optional[str] = None  # node-local audio cache; null: off
    cache_gb: float = 50.0  # the cache's size limit


@dataclass
class WandbCfg:
    """Weights & Biases tracking."""

    mode: str = "disabled"  # online | offline | disabled
    project: str = "asrd"  # W&B project
    entity: Optional[str] = None  # W&B entity (team); null: the default
    dir: Optional[str] = None  # null: RUN_DIR/wandb
    log_every_s: float = 10.0  # metrics interval of a task's run
    sample_rows: int = 16  # transcripts (with audio) shown in the merge run


@dataclass
class MonitoringCfg:
    """Prometheus metrics of each task: a file for node_exporter's textfile collector and/or an
    HTTP endpoint to scrape. Off unless a folder or a port is set."""

    textfile_dir: Optional[str] = None  # node_exporter's textfile directory; null: no file
    port: Optional[int] = None  # serve /metrics on this port (0: any free one); null: no endpoint
    addr: str = "0.0.0.0"  # the address the endpoint listens on
    every_s: float = 15.0  # the metrics are refreshed at most this often


@dataclass
class MergeCfg:
    """`asrd merge`: the merged dataset."""

    target_file_mb: float = 256.0  # size of each merged Parquet file
    filter: list[str] = field(default_factory=list)  # SQL WHERE clauses every kept row matches
    preset: str = "default"  # quality preset: default|strict|run|none, or a preset file (.yaml)
    allow_incomplete: bool = False  # merge even with shards missing or rejected


@dataclass
class VllmJudgeCfg:
    """vLLM's own knobs for the judge (judge.kind=vllm)."""

    max_model_len: Optional[int] = None  # context length; null: the model's
    enforce_eager: bool = False  # skip CUDA graphs (faster start, slower decode)
    dtype: str = "auto"  # float16 | bfloat16 | float32 | auto (the model's)
    load_format: str = "auto"  # "dummy" builds random weights from config.json (benchmarks)


@dataclass
class ExportCfg:
    """`asrd export`: the merged rows with their audio, in a trainer's format."""

    format: str = "hf"  # hf | webdataset | lhotse
    audio: str = "flac16k"  # flac16k (16 kHz mono FLAC) | original (the source file's bytes)
    shard_mb: float = 500.0  # a shard ends at the first row past this size
    windows: bool = False  # training windows: a recording's consecutive segments in <= window_s
    window_s: float = 30.0  # the longest training window, seconds (Whisper takes 30)
    workers: int = 4  # threads reading and encoding audio
    batch_rows: int = 64  # merged rows read at a time


@dataclass
class QualityCfg:
    """Per-row quality signals and flags (asrd.quality), computed in the pipeline.

    `audio_language` null (the default) detects the spoken language where it costs little and
    the label is in doubt: faster-whisper, for a segment whose average log-probability is below
    `doubt_logprob` (a decoder step on the encoder output it keeps); never on vLLM (prompt
    log-probabilities, which vLLM computes request by request: 42% of Whisper-base's GPU
    throughput together with the output log-probabilities, measured). true: every segment on
    every engine; false: none."""

    enabled: bool = True  # signals and flags in every ok row; false: those columns stay null
    languages: list[str] = field(default_factory=lambda: [  # text language ID candidates
        "en", "de", "es", "fr", "it", "pt", "nl"])  # (ISO 639-1; engine.language is added)
    ngram: int = 10  # the n of `ngram_repeats`
    audio_language: Optional[bool] = None  # Whisper's spoken-language detection; null: where cheap
    doubt_logprob: float = -0.5  # audio_language null: detect where avg log-prob is below this
    doubt_words: int = 6  # ... or (a segment transcribed alone) its text has fewer words
    thresholds: Thresholds = field(default_factory=Thresholds)


@dataclass
class LanguageIdCfg:
    """A first pass that identifies each segment's spoken language before the engine sees it
    (asrd.engines.language_id), in the engine's own actor: one more small model per actor. Where
    the index gives a row no `language`, the identified one is the language the engine
    transcribes in (its per-language prompt) and the row's output `language`; the detection is
    the row's `audio_language`/`audio_language_p`, and flags `unwanted_language`,
    `unsure_language` mark what `languages` and `min_p` leave out. Short clips are then not
    packed (a packed window has one language)."""

    enabled: bool = False  # run the pass; off: the engine gets the index's or engine.language
    kind: str = "faster_whisper"  # the identifier: faster_whisper (CPU) | vllm (a GPU actor's)
    model: str = "whisper-base"  # its model: "whisper-base" (PyPI) or a local model directory
    compute_type: str = "int8"  # faster_whisper: int8 | float32 (vllm: engine.compute_type)
    languages: list[str] = field(default_factory=list)  # the wanted languages (ISO 639-1); []: any
    min_p: float = 0.5  # below this probability a segment is not routed, and its row is unsure
    max_new_tokens: int = 1  # vllm: output tokens (Whisper's language token: 1; FireRedLID: more)
    gpu_memory_utilization: float = 0.1  # vllm: the identifier's share of its engine's GPU


@dataclass
class JudgeCfg:
    """An LLM that rates each transcript with one of `choices` (the `score` column)."""

    enabled: bool = False  # off: no score column
    kind: str = "transformers"  # transformers | vllm
    model: str = ""  # a local text LLM directory
    device: str = "cpu"  # transformers: cpu | cuda
    system_prompt: str = "You rate transcripts of speech."  # the judge's system prompt
    user_template: str = (  # the judge's prompt; {text} marks the transcript
        "Rate how plausible this transcript of real speech is, from 1 (garbage) to 5 "
        "(fluent, natural). Answer with one digit.\nTranscript: {text}"
    )
    choices: list[str] = field(  # the allowed answers, numbers (the score)
        default_factory=lambda: ["1", "2", "3", "4", "5"])
    max_text_chars: int = 4000  # a longer transcript is judged on its first characters
    batch_size: int = 16  # transcripts per judge call
    num_engines: int = 1  # judge actors per node
    gpus_per_engine: float = 0.0  # GPUs each judge actor holds
    gpu_memory_utilization: float = 0.3  # vllm: share of a GPU's memory
    vllm: VllmJudgeCfg = field(default_factory=VllmJudgeCfg)


@dataclass
class FaultCfg:
    """Settings of the hook module a run may select (asrd.hooks; the tests' fault injection,
    asrd.testing.faults), so that tests drive every fault path without clocks or signals. asrd
    carries them to every process of the run and reads none of them itself.

    The engine hooks act when `engine.kind=fault` (which wraps `inner`); the decode hook acts with
    any engine. All are off by default."""

    inner: Optional[str] = None  # the engine kind the fault engine wraps; null: text made from the audio
    fail_ids: list[str] = field(default_factory=list)  # engine calls holding these rows raise
    raise_on_calls: list[int] = field(default_factory=list)  # these calls (1-based, per actor) raise
    exit_after_calls: int = 0  # the engine actor exits on the call after this many (once per state_dir)
    block_after_calls: int = -1  # later calls wait until `release_file` exists; -1: never block
    release_file: Optional[str] = None  # see block_after_calls
    call_delay_s: float = 0.0  # every engine call takes at least this long
    decode_exit_ids: list[str] = field(default_factory=list)  # a decode actor exits on these rows
    decode_exit_segment: int = -1  # a streaming decode actor exits once on this segment; -1: never
    unplaceable_ids: list[str] = field(default_factory=list)  # packed: these rows' words unplaced
    blank_ids: list[str] = field(default_factory=list)  # these rows' long segments come back empty
    blank_over_s: float = 0.0  # ... those longer than this (a model giving up on a long window)
    kill_at: Optional[str] = None  # the process SIGKILLs itself at this named point (faults.POINTS)
    kill_times: int = 0  # ... only its first this many arrivals, counted in state_dir; 0: every one
    hold_at: Optional[str] = None  # ... or waits there until `release_file` exists
    export_exit_after_items: int = 0  # `asrd export` exits after writing this many items
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
    monitoring: MonitoringCfg = field(default_factory=MonitoringCfg)
    merge: MergeCfg = field(default_factory=MergeCfg)
    export: ExportCfg = field(default_factory=ExportCfg)
    judge: JudgeCfg = field(default_factory=JudgeCfg)
    quality: QualityCfg = field(default_factory=QualityCfg)
    language_id: LanguageIdCfg = field(default_factory=LanguageIdCfg)
    faults: FaultCfg = field(default_factory=FaultCfg)


# The hashed/run-only split. OUTPUT_KEYS change the rows a run writes (model, prompt, decoding,
# audio and segmentation, judge): the config hash covers exactly these, and a resubmission or merge
# with a different value is refused as config drift, naming the key. RUN_KEYS say where and how
# the run executes (engines, GPUs, batching, pipeline sizing, SLURM, store, tracking, faults):
# they may change between resubmits. An entry names a key or a whole section; every key of the
# schema is under exactly one entry of the two (tests/test_config.py checks it), so a new key must
# be classified here. A new output-relevant section is added to OUTPUT_KEYS whole. The quality
# thresholds are not output: they only judge the stored signals, and `asrd merge` computes the
# flags again from those, so they may change at merge time (quality.* keys that change the
# signals themselves stay output keys).
OUTPUT_KEYS = (
    "run.index", "run.num_shards",
    "audio.sample_rate", "audio.max_segment_s", "audio.retry_segment_s", "audio.vad", "audio.pack",
    "audio.max_duration_s",
    "engine.kind", "engine.model", "engine.compute_type", "engine.language", "engine.task",
    "engine.instruction", "engine.system_prompt", "engine.max_new_tokens", "engine.beam_size",
    "engine.temperature", "engine.load_format", "engine.ignore_eos", "engine.vllm.seed",
    "engine.vllm.kv_cache_dtype", "engine.vllm.prompts", "engine.vllm.request_prompt",
    "judge.enabled", "judge.kind", "judge.model", "judge.system_prompt", "judge.user_template",
    "judge.choices", "judge.max_text_chars", "judge.vllm.dtype", "judge.vllm.load_format",
    "quality.enabled", "quality.languages", "quality.ngram", "quality.audio_language",
    "quality.doubt_logprob", "quality.doubt_words",
    "language_id.enabled", "language_id.kind", "language_id.model", "language_id.compute_type",
    "language_id.languages", "language_id.min_p", "language_id.max_new_tokens",
)
RUN_KEYS = (
    "run.name", "run.dir",
    "audio.read_retries",
    "engine.device", "engine.batch_size", "engine.num_engines", "engine.gpus_per_engine",
    "engine.cpus_per_engine", "engine.tensor_parallel_size", "engine.gpu_memory_utilization",
    "engine.max_model_len", "engine.calls_in_flight", "engine.vllm.render_in",
    "engine.vllm.render_threads", "engine.vllm.feature_device", "engine.vllm.max_concurrency",
    "engine.vllm.max_num_seqs", "engine.vllm.max_num_batched_tokens", "engine.vllm.enforce_eager",
    "engine.vllm.attention_backend",
    "engine.vllm.max_restarts", "engine.vllm.stats_every_s", "engine.transformers",
    "judge.device", "judge.batch_size", "judge.num_engines", "judge.gpus_per_engine",
    "judge.gpu_memory_utilization", "judge.vllm.max_model_len", "judge.vllm.enforce_eager",
    "pipeline", "slurm", "store", "wandb", "monitoring", "merge", "export", "faults",
    "quality.thresholds", "language_id.gpu_memory_utilization",
)
FREE_FORM_MAPS = ("slurm.env",)  # keys chosen by the user: one value


Layer = str | Path | dict | DictConfig  # a YAML file, a mapping, or a config loaded before


@functools.cache
def _schema() -> DictConfig:
    """The schema's defaults, built once: building them is half of a load's time, and each load
    starts from a copy, so this one never changes."""
    return OmegaConf.structured(Config)


def load(path: Layer | Sequence[Layer] | None = None,
         overrides: list[str] | None = None) -> DictConfig:
    """Schema defaults <- YAML file(s) or mappings, in order <- `key=value` overrides, validated.

    Several layers serve commands on a planned run: its frozen config, then the `-c` file."""
    layers = [path] if isinstance(path, (str, Path, dict, DictConfig)) else list(path or [])
    try:
        cfg = _schema()
        for layer in layers:  # a merge returns a new config: the cached schema never changes
            cfg = OmegaConf.merge(cfg, _upgrade(_read_layer(layer)))
        if overrides:
            cfg = OmegaConf.merge(cfg, _upgrade(OmegaConf.from_dotlist(list(overrides))))
        if cfg is _schema():
            cfg = copy.deepcopy(cfg)
        OmegaConf.to_container(cfg, resolve=True)  # an unresolvable ${...} fails here, named
        hooks.configure(cfg.faults)
    except InterpolationResolutionError as e:
        why = str(e.msg).splitlines()[0].split("while resolving interpolation: ")[-1]
        raise ConfigError(f"cannot resolve config key {e.full_key!r}: {why}") from e
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        why = str(getattr(e, "msg", e)).strip().splitlines()[0]  # the rest repeats the key
        raise ConfigError(f"invalid config key {key!r}: {why}") from e
    validate(cfg)
    return cfg


def read_file(path: Path) -> DictConfig:
    """A YAML config file as a mapping; anything else is a ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from None
    try:
        loaded = OmegaConf.load(io.StringIO(text))
    except OSError:  # OmegaConf's word for a file holding a single value (a number, a string)
        loaded = None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        why = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML{at}: {why}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"config file {path} must be a mapping of sections (run:, engine:, ...), "
                          f"not {'a list' if isinstance(loaded, ListConfig) else 'a single value'}")
    return loaded


# Configs written before the typed engine sections kept engine options in free-form `extra` maps
# (a run directory's frozen config.yaml has them): each known key moves to the section that holds
# it now; any other is refused like an unknown key. Their merge.filter was one clause or null.
_EXTRA_MOVES = {
    "engine": {**{k: f"vllm.{k}" for k in VllmEngineCfg.__dataclass_fields__},
               **{k: f"transformers.{k}" for k in TransformersEngineCfg.__dataclass_fields__}},
    "judge": {"max_text_chars": "max_text_chars",
              **{k: f"vllm.{k}" for k in VllmJudgeCfg.__dataclass_fields__}},
}


def _read_layer(layer: Layer) -> DictConfig:
    if isinstance(layer, DictConfig):  # copied: _upgrade edits a layer in place
        return copy.deepcopy(layer)
    if isinstance(layer, dict):
        return OmegaConf.create(layer)
    return read_file(Path(layer))


# Keys of earlier versions whose meaning is gone; a run directory's frozen config.yaml has them
# (every key is frozen), so they are dropped on reading, never refused.
_RETIRED = {"quality": {"thresholds": ("min_language_p",)}}  # replaced by the language margins


def _upgrade(raw: DictConfig) -> DictConfig:
    _drop_retired(raw, _RETIRED)
    merge_cfg = raw.get("merge") if isinstance(raw, DictConfig) else None
    if isinstance(merge_cfg, DictConfig) and "filter" in merge_cfg:
        old = merge_cfg.get("filter")
        if old is None:
            merge_cfg.pop("filter")
        elif isinstance(old, str):
            merge_cfg["filter"] = [old]
    for section, moves in _EXTRA_MOVES.items():
        node = raw.get(section) if isinstance(raw, DictConfig) else None
        if not isinstance(node, DictConfig) or "extra" not in node:
            continue
        extra = node.pop("extra") or {}
        for key, value in dict(extra).items():
            if key not in moves:
                raise ConfigError(
                    f"invalid config key '{section}.extra.{key}': {section}.extra was replaced "
                    f"by typed sections; the keys they take are listed by `asrd config`")
            OmegaConf.update(node, moves[key], value, force_add=True)
    return raw


def _drop_retired(node: Any, retired: dict) -> None:
    for key, inner in retired.items():
        child = node.get(key) if isinstance(node, DictConfig) else None
        if isinstance(inner, dict):
            _drop_retired(child, inner)
        elif isinstance(child, DictConfig):
            for name in inner:
                if name in child:
                    child.pop(name)
                    log.warning("config key %s.%s is no longer used: ignored", key, name)


def validate(cfg: DictConfig) -> None:
    """Refuse the first value out of its range or inconsistent with another key."""
    from asrd.config_checks import problems

    for key, why in problems(cfg):
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
