"""vLLM behind the `Engine` interface: Whisper, Qwen2-Audio and every model vLLM can transcribe
with (vllm_transcription.py), with continuous batching on a GPU.

Why it is built this way (measured on an H100, bench/RESULTS.md): vLLM's front end, not the GPU,
limits small models. Every request's audio must become log-mel features and an engine input (the
model's Hugging Face processor), and a plain `LLM.generate` does that on one core, one clip after
another (37 clips/s for Whisper), while the GPU idles. So:

- one in-process `AsyncLLM` (no HTTP server) runs on an event loop in a background thread, and
  `transcribe` may be called from many threads at once (`engine.vllm.max_concurrency`): every segment of every
  call becomes its own request, so the engine's queue stays full as long as callers have audio;
- engine inputs are rendered where there are CPUs to spare: by default in the CPU decode actors
  (`input_preparer()`, vllm_inputs.py), so the engine's process only submits ready inputs;
  with `engine.vllm.render_in: engine` in a pool of `render_threads` threads of this process (vLLM's renderer
  pool; the processor cache is off, which that pool requires), log-mel on `feature_device`;
- the scheduler's token budget is raised so that many 1500-token Whisper encoder inputs run per
  step (AsyncLLM's default of 2048 admits one and left the GPU 91% idle);
- texts are decoded from token ids once per request in the caller's thread (the engine does not
  detokenize incrementally on its single event-loop thread).

Segments longer than the model's 30 s window are refused before anything is sent (the processor
would cut them silently). A failed request fails its call (the pipeline then retries halves and
finally writes error rows); an engine that died is rebuilt and the call retried, a bounded number
of times.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from asrd.audio.pack import Member
from asrd.engines.base import (Engine, EngineUnavailable, Hypothesis, PackedWindow, Segment,
                               detection_threshold)
from asrd.engines.vllm_inputs import InputRenderer, PromptSpec, Relanguager, prompt_maker
from asrd.engines.vllm_signals import WhisperTokens, hypothesis, request_args, token_logprobs
from asrd.engines.vllm_transcription import TranscriptionSpec, check_architecture
from asrd.engines.whisper_timestamps import (WINDOW_MAX_TOKENS, WhisperIds, packed_hypotheses,
                                             timed_pieces)

log = logging.getLogger(__name__)

# The architectures asrd makes prompts for itself; any other that vLLM can transcribe with runs
# on its vLLM class's prompts ("transcription").
ARCHITECTURES = {"WhisperForConditionalGeneration": "whisper",
                 "Qwen2AudioForConditionalGeneration": "qwen2_audio"}
WHISPER = "WhisperForConditionalGeneration"
DTYPES = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32", "auto": "auto",
          "int8": "auto"}  # int8 is faster-whisper's default; vLLM then takes the model's dtype


def mistral_format(model_dir: str | Path) -> bool:
    """Whether the folder is in Mistral's own layout (params.json, tekken.json), which Voxtral's
    vLLM class needs. vLLM picks its mistral config and tokenizer modes by itself only beside
    consolidated*.safetensors weights, so asrd names them (a folder of random weights has none)."""
    d = Path(model_dir)
    return (d / "params.json").is_file() and (d / "tekken.json").is_file()


def model_formats(model_dir: str | Path) -> dict[str, str]:
    """The config and tokenizer formats vLLM must be told for this folder (none: its own
    detection)."""
    return dict(config_format="mistral", tokenizer_mode="mistral") if mistral_format(
        model_dir) else {}


def mistral_architecture(params: dict[str, Any]) -> str:
    """The architecture vLLM 0.25.0 gives a params.json: an audio encoder makes it Voxtral (the
    causal encoder the realtime one); vLLM names the text and vision ones by more keys than asrd
    reads, and none of them transcribes."""
    encoder = ((params.get("multimodal") or {}).get("whisper_model_args") or {}).get(
        "encoder_args")
    if not encoder:
        return "MistralForCausalLM"
    if encoder.get("causal"):
        return "VoxtralRealtimeGeneration"
    return "VoxtralForConditionalGeneration"


def architectures(model_dir: str | Path) -> list[str]:
    """config.json's "architectures" of a local model directory (params.json's for a folder in
    Mistral's layout: what vLLM then reads)."""
    if mistral_format(model_dir):
        return [mistral_architecture(json.loads((Path(model_dir) / "params.json").read_text()))]
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise EngineUnavailable(
            f"engine.model={str(model_dir)!r} is not a model directory with a config.json (or "
            "Mistral's params.json and tekken.json); the vllm engine takes a local model "
            "directory")
    return list(json.loads(path.read_text()).get("architectures") or [])


def model_kind(model_dir: str | Path, prompts: str = "auto") -> str:
    """Whose prompts the model runs with: "whisper" or "qwen2_audio" (asrd's), or
    "transcription" (its vLLM class's; `prompts="model"` takes the class's for Whisper too).
    Refuses an architecture vLLM cannot transcribe with, naming those it can."""
    archs = architectures(model_dir)
    if prompts != "model":
        for arch in archs:
            if arch in ARCHITECTURES:
                return ARCHITECTURES[arch]
    where = "params.json" if mistral_format(model_dir) else "config.json"
    check_architecture(archs, str(Path(model_dir) / where))
    return "transcription"


def _whisper_features(model_dir: Path) -> dict[str, Any] | None:
    """What makes a Whisper folder's encoder input: its feature extractor's settings and its
    encoder positions (the input's placeholder count); None for another architecture."""
    if WHISPER not in architectures(model_dir):
        return None
    from transformers import WhisperFeatureExtractor

    # (transformers reads it from either file a folder may hold it in)
    settings = WhisperFeatureExtractor.from_pretrained(str(model_dir),
                                                       local_files_only=True).to_dict()
    settings.pop("processor_class", None)
    config = json.loads((model_dir / "config.json").read_text())
    return {"extractor": settings, "positions": config.get("max_source_positions")}


def shares_features(model_dir: str | Path, other_dir: str | Path) -> bool:
    """Whether two model folders turn audio into the same encoder input: the same folder, or
    two Whispers with the same feature extractor and encoder positions (whisper-tiny and -base:
    80 log-mel bins each; large-v3 has 128)."""
    a, b = Path(model_dir).resolve(), Path(other_dir).resolve()
    if a == b:
        return True
    features = _whisper_features(a)
    return features is not None and features == _whisper_features(b)


def memory_fraction(engine_cfg: DictConfig) -> float:
    """Each engine's share of its GPU's memory: several engines on one GPU split the budget."""
    share = float(engine_cfg.gpus_per_engine)
    frac = float(engine_cfg.gpu_memory_utilization)
    return frac * share if 0 < share < 1 else frac


def engine_args(engine_cfg: DictConfig, whisper: bool):
    """vLLM's engine arguments for `engine_cfg` (`whisper`: an encoder-decoder's sizing)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    cfg, opt, model = engine_cfg, engine_cfg.vllm, str(engine_cfg.model)
    kwargs: dict[str, Any] = dict(
        model=model, tokenizer=model,
        dtype=DTYPES.get(str(cfg.compute_type), str(cfg.compute_type)),
        load_format=str(cfg.load_format),
        gpu_memory_utilization=memory_fraction(cfg),
        tensor_parallel_size=int(cfg.tensor_parallel_size),
        limit_mm_per_prompt={"audio": 1},
        # The renderer pool needs the processor cache off; unique audio never hits it anyway.
        mm_processor_cache_gb=0, renderer_num_workers=max(1, opt.render_threads),
        enforce_eager=bool(opt.enforce_eager), seed=int(opt.seed),
        kv_cache_dtype=str(opt.kv_cache_dtype),
    )
    kwargs.update(model_formats(model))
    if opt.attention_backend:
        kwargs["attention_backend"] = str(opt.attention_backend)
    if cfg.max_model_len:
        kwargs["max_model_len"] = int(cfg.max_model_len)
    elif whisper:
        kwargs["max_model_len"] = 448  # Whisper's decoder positions
    kwargs["max_num_seqs"] = int(opt.max_num_seqs or (512 if whisper else 256))
    # (the KV pool's "maximum concurrency" vLLM logs reserves this many encoder positions per
    # request, not Whisper's 1,500: the real requests fit ~60x as many as it says)
    kwargs["max_num_batched_tokens"] = int(opt.max_num_batched_tokens
                                           or (64 * 1500 if whisper else 32768))
    if int(cfg.tensor_parallel_size) > 1:
        # Inside a Ray actor vLLM would otherwise try to place its workers through Ray.
        kwargs["distributed_executor_backend"] = "mp"
    return AsyncEngineArgs(**kwargs)


class VllmEngine(Engine):
    """One vLLM engine (one GPU, a share of one, or a tensor-parallel group)."""

    def __init__(self, engine_cfg: DictConfig, signals: bool = True, detection: bool = True):
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise EngineUnavailable(
                "engine.kind=vllm needs vLLM on a GPU node: pip install 'asrd[gpu]' "
                f"(or scripts/device/setup.sh on the lent GPU machine): {e}") from e
        self._cfg = engine_cfg
        self.signals = signals  # ask for log-probabilities (asrd.engines.vllm_signals)
        self.detection = detection  # and for Whisper's spoken language / no-speech probability
        self.options = engine_cfg.vllm  # engine.vllm.*, checked when the config loaded
        self.max_concurrency = int(self.options.max_concurrency)
        self._model_dir = str(engine_cfg.model)
        self.kind = model_kind(self._model_dir, str(self.options.prompts))
        self.whisper = WHISPER in architectures(self._model_dir)  # encoder-decoder sizing
        self._ids = itertools.count()
        self._restart_lock = threading.Lock()
        self._generation = 0
        self._restarts = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-loop",
                                        daemon=True)
        self._thread.start()
        self._llm: Any = None
        t0 = time.monotonic()
        self._start()
        self.startup_s = time.monotonic() - t0
        every = float(self.options.stats_every_s)
        self._stats = (asyncio.run_coroutine_threadsafe(self._log_stats(every), self._loop)
                       if every > 0 else None)
        log.info("vllm engine %s (%s) ready in %.1f s", self._model_dir, self.kind,
                 self.startup_s)

    @classmethod
    def check(cls, engine_cfg: DictConfig, packages: bool = True) -> None:
        model_kind(str(engine_cfg.model), str(engine_cfg.vllm.prompts))
        if packages and importlib.util.find_spec("vllm") is None:
            raise EngineUnavailable("engine.kind=vllm needs vLLM on a GPU node: pip install "
                                    "'asrd[gpu]'")

    @classmethod
    def from_config(cls, engine_cfg: DictConfig, quality: DictConfig | None = None) -> Engine:
        # prompt log-probabilities, which vLLM computes request by request: not cheap
        return cls(engine_cfg, signals=quality is None or bool(quality.enabled),
                   detection=detection_threshold(quality, cheap=False) is not None)

    @property
    def name(self) -> str:
        return f"vllm:{Path(self._model_dir).name}"

    # --- life cycle -------------------------------------------------------------------------

    def _start(self) -> None:
        """Build the AsyncLLM, one engine at a time per GPU (simultaneous starts on one GPU
        mis-measure each other's memory)."""
        from filelock import FileLock
        from vllm.v1.engine.async_llm import AsyncLLM

        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "all").replace(",", "-") or "all"
        lock = FileLock(os.path.join(tempfile.gettempdir(), f"asrd-vllm-start-gpu{gpus}.lock"))
        args = engine_args(self._cfg, self.whisper)

        async def build():
            return AsyncLLM.from_engine_args(args)

        with lock:
            self._llm = asyncio.run_coroutine_threadsafe(build(), self._loop).result()
        self._tokenizer = self._llm.get_tokenizer()
        whisper = self.kind == "whisper"
        self._whisper_tokens = WhisperTokens.of(self._tokenizer) if whisper else None
        self._whisper_ids = WhisperIds.of(self._tokenizer) if whisper else None
        self._bias = {timestamps: self._banned(timestamps) for timestamps in (False, True)}
        self.prompts = prompt_maker(self._prompt_spec(), self._tokenizer, self._llm.model_config)
        # re-makes inputs prepared before the language-ID pass in the identified language
        self.relanguager = Relanguager(self._llm.renderer, self._llm.model_config, self.prompts)
        self._render_slots = asyncio.Semaphore(max(1, self.options.render_threads))

    def _prompt_spec(self) -> PromptSpec | TranscriptionSpec:
        cfg = self._cfg
        if self.kind == "transcription":
            return TranscriptionSpec(str(cfg.task), cfg.language,
                                     str(self.options.request_prompt or ""))
        return PromptSpec.from_engine_cfg(self.kind, cfg, self.options.feature_device)

    async def _log_stats(self, every_s: float) -> None:
        """vLLM's own stats line (running and waiting requests, KV cache use) every `every_s`:
        the offline engine never logs it by itself, and it shows how many requests decode
        together."""
        while True:
            await asyncio.sleep(every_s)
            if self._llm is not None:
                try:
                    await self._llm.do_log_stats()
                except Exception as e:  # a dying engine: its calls' own errors say more
                    log.debug("vllm stats: %s", e)

    def close(self) -> None:
        if self._stats is not None:
            self._stats.cancel()
        if self._llm is not None:
            try:
                self._llm.shutdown()
            except Exception as e:  # shutting down a dead engine may fail; nothing is lost
                log.warning("vllm shutdown: %s", e)
            self._llm = None
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    # --- inputs ------------------------------------------------------------------------------

    def input_preparer(self) -> InputRenderer | None:
        """With `render_in: decode`, the decode actors render engine inputs (vllm_inputs.py)."""
        if self.options.render_in != "decode":
            return None
        return self.input_renderer()

    def input_renderer(self) -> InputRenderer:
        """What renders this engine's inputs in another process (the language-ID pass asks an
        identifier's too, whatever its `render_in`)."""
        return InputRenderer(self._llm.vllm_config, self.prompts.spec)

    def same_processor(self, other: VllmEngine) -> bool:
        """Whether `other` turns audio into the same encoder input (`shares_features`): an
        input of one then serves the other with its own prompt spliced in."""
        return shares_features(self._model_dir, other._model_dir)

    def sampling_params(self, timestamps: bool = False):
        """`timestamps`: a packed window's, whose text may take the decoder's whole room."""
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        cfg = self._cfg
        max_tokens = WINDOW_MAX_TOKENS if timestamps else int(cfg.max_new_tokens)
        return SamplingParams(temperature=float(cfg.temperature), max_tokens=max_tokens,
                              logit_bias=dict(self._bias[timestamps]) or None,
                              ignore_eos=bool(cfg.ignore_eos), detokenize=False,
                              skip_special_tokens=True, output_kind=RequestOutputKind.FINAL_ONLY,
                              seed=None if cfg.temperature == 0 else self.options.seed,
                              **(request_args(self.kind, self.detection)
                                 if self.signals else {}))

    def _banned(self, timestamps: bool) -> dict[int, float]:
        """Whisper tokens a request must not write (made once per engine start; vLLM applies
        none of Whisper's decoding rules): <|notimestamps|> in a packed window's output
        (Whisper-base wrote it first and no timestamp after, so no clip could be placed); and,
        for a transcription, the no-speech token and <|translate|>, which Whisper may write
        after <|startoftranscript|> when the prompt leaves the language to it (an empty or
        translated row)."""
        if self._whisper_tokens is None:
            return {}
        tok = self._tokenizer
        banned = [tok.convert_tokens_to_ids("<|notimestamps|>")] if timestamps else []
        if self._cfg.task == "transcribe":
            banned.append(tok.convert_tokens_to_ids("<|translate|>"))
            if self._whisper_tokens.no_speech is not None:
                banned.append(self._whisper_tokens.no_speech)
        return {int(t): -100.0 for t in banned}

    # --- transcription -----------------------------------------------------------------------

    def transcribe(self, segments: list[Segment]) -> list[str]:
        """Texts for segments of raw audio or of inputs prepared by `input_preparer()`."""
        return [h.text for h in self.hypotheses(segments)]

    def hypotheses(self, segments: list[Segment]) -> list[Hypothesis]:
        """Texts with the model's signals (when asked for: `quality.enabled`)."""
        if not segments:
            return []
        for i, seg in enumerate(segments):
            if seg.prepared is None:
                self.prompts.check(seg.audio, i)
        return [self._said(o) for o in self.generate_outputs(segments)]

    def _said(self, output: Any) -> Hypothesis:
        """One request's hypothesis; through the model's class, the text it cleans and the
        language its output states."""
        ids = output.outputs[0].token_ids
        if self.kind != "transcription":
            return hypothesis(output, self._text(ids), self._whisper_tokens)
        said = self.prompts.text(self._tokenizer.decode(ids, skip_special_tokens=True))
        return said.on(hypothesis(output, said.text, None))

    def _text(self, token_ids: list[int]) -> str:
        """The words of output tokens: Whisper's special and timestamp tokens left out by id
        (a tokenizer file need not mark the timestamps special, and without a language Whisper
        may write them), other models' by the tokenizer."""
        ids = self._whisper_ids
        if ids is not None:
            token_ids = [t for t in token_ids if t < ids.first_special]
        return self._tokenizer.decode(token_ids, skip_special_tokens=True).strip()

    @classmethod
    def packs(cls, engine_cfg: DictConfig) -> bool:
        """Whisper writes timestamps to split a packed window by; Qwen2-Audio does not."""
        return model_kind(engine_cfg.model, str(engine_cfg.vllm.prompts)) == "whisper"

    def hypotheses_packed(self, window: Segment, members: list[Member]
                          ) -> list[Hypothesis | None]:
        return self.hypotheses_windows([PackedWindow(window, tuple(members))])[0]

    def hypotheses_windows(self, windows: list[PackedWindow]) -> list[list[Hypothesis | None]]:
        """Every window's request at once, with Whisper's timestamps (its prompt without
        <|notimestamps|>; a window prepared in a decode actor has it already), each split back
        to its clips by time, with their tokens' mean log-probability."""
        for w in windows:
            if w.segment.prepared is None:
                self.prompts.check(w.segment.audio)
        outputs = self.generate_outputs([w.segment for w in windows], timestamps=True)
        decode = lambda t: self._tokenizer.decode(t, skip_special_tokens=True)  # noqa: E731
        return [packed_hypotheses(timed_pieces(o.outputs[0].token_ids, self._whisper_ids, decode,
                                               token_logprobs(o)), list(w.members))
                for o, w in zip(outputs, windows, strict=True)]

    def generate_outputs(self, segments: list[Segment], timestamps: bool = False) -> list[Any]:
        """vLLM's final output per segment; rebuilds a dead engine and retries (bounded)."""
        from vllm.v1.engine.exceptions import EngineDeadError

        while True:
            generation = self._generation
            try:
                return self.submit(self._batch(segments, timestamps)).result()
            except EngineDeadError:
                self._restart(generation)

    def submit(self, coro):
        """Run a coroutine on the engine's event loop; returns a concurrent Future."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def _restart(self, generation: int) -> None:
        with self._restart_lock:
            if self._generation != generation:
                return  # another caller already rebuilt it
            if self._restarts >= self.options.max_restarts:
                raise EngineUnavailable(f"the vLLM engine died {self._restarts + 1} times; "
                                        "giving up (see the engine log above)")
            self._restarts += 1
            log.error("the vLLM engine died; rebuilding it (%d/%d)", self._restarts,
                      self.options.max_restarts)
            try:
                self._llm.shutdown()
            except Exception as e:
                log.warning("vllm shutdown after death: %s", e)
            self._start()
            self._generation += 1

    async def _batch(self, segments: list[Segment], timestamps: bool = False) -> list[Any]:
        results = await asyncio.gather(*(self._one(s, timestamps) for s in segments),
                                       return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    async def render(self, segment: Segment, request_id: str, timestamps: bool = False):
        """The engine input for one segment, prepared in the front end's thread pool."""
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        prompt = self.prompts.prompt(segment.audio, segment.language, request_id, timestamps)
        parsed = parse_model_prompt(self._llm.model_config, prompt)
        async with self._render_slots:
            (engine_input,) = await self._llm.renderer.render_cmpl_async([parsed])
        return engine_input

    async def _one(self, segment: Segment, timestamps: bool = False) -> Any:
        request_id = f"asrd-{next(self._ids)}"
        if segment.prepared is not None:
            # rendered in a decode actor; it arrives now (the engine's order is arrival order)
            engine_input = {**segment.prepared, "arrival_time": time.time()}
        else:
            engine_input = await self.render(segment, request_id, timestamps)
        return await self.generate_output(engine_input, request_id, timestamps)

    async def generate_rendered(self, engine_input, request_id: str) -> list[int]:
        """Output token ids of one rendered input."""
        return list((await self.generate_output(engine_input, request_id)).outputs[0].token_ids)

    async def generate_output(self, engine_input, request_id: str, timestamps: bool = False
                              ) -> Any:
        """vLLM's final RequestOutput of one rendered input."""
        final = None
        async for out in self._llm.generate(engine_input, self.sampling_params(timestamps),
                                            request_id):
            final = out
        if final is None or not final.outputs:
            raise RuntimeError(f"vLLM returned no output for request {request_id}")
        return final
