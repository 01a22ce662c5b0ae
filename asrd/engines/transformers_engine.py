"""Any Whisper or Qwen2-Audio architecture model through Hugging Face transformers, CPU or GPU.

Why a transformers engine beside faster-whisper and vLLM: it runs every checkpoint of these two
architectures (fine-tunes included) on any machine, with no conversion step, so that a model can
be tried on a CPU node before a GPU run and results compared engine to engine.

Decoding is batched: Whisper's features are padded to its 30 s window and segments are grouped
by language (it is forced as a decoder token); Qwen2-Audio gets one chat prompt per segment
(asrd.engines.prompts), left-padded, and its prompt is cut from the output. Nothing is downloaded: the
model is a local directory with the weights and the processor files.

Whisper's log-mel features are made in the pipeline's decode actors (`WhisperFeatures`, the
engine's input preparer): they scale with the node's CPUs, while the engine's one process would
otherwise compute them between generate calls and leave its device idle meanwhile. The engine
still computes the features of segments given as raw audio (direct calls, mixed batches).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from asrd.audio.pack import Member
from asrd.config import ConfigError
from asrd.engines.base import (Engine, EngineUnavailable, Hypothesis, InputPreparer, PackedWindow,
                               Segment)
from asrd.engines.prompts import audio_chat_messages
from asrd.engines.whisper_timestamps import (WINDOW_MAX_TOKENS, WhisperIds, packed_hypotheses,
                                             timed_pieces)

SAMPLE_RATE = 16000
WINDOW_S = 30.0
SUPPORTED = ("whisper", "qwen2_audio")
DTYPES = ("float32", "bfloat16", "float16", "int8")


class TransformersEngine(Engine):
    """One model in this process; `transcribe` decodes greedily (or as the config says)."""

    max_concurrency = 1

    @classmethod
    def check(cls, engine_cfg: DictConfig, packages: bool = True) -> None:
        _model_dir(str(engine_cfg.model))
        missing = [p for p in ("torch", "transformers") if importlib.util.find_spec(p) is None]
        if packages and missing:
            raise EngineUnavailable(f"the transformers engine needs {' and '.join(missing)}: "
                                    "pip install 'asrd[transformers]'")

    def __init__(self, cfg: DictConfig):
        self._cfg = cfg
        model_dir = self._model_dir = _model_dir(cfg.model)
        torch, transformers = _import_transformers()
        self._torch = torch
        self._device = _device(torch, str(cfg.device))
        dtype = _dtype(torch, str(cfg.compute_type), self._device)
        if self._device.type == "cpu":
            # torch takes every core by default and its spinning threads then fight the decode
            # actors for them (5x slower under contention); the engine gets its configured share.
            torch.set_num_threads(max(1, round(cfg.cpus_per_engine)))
        try:
            config = transformers.AutoConfig.from_pretrained(model_dir, local_files_only=True)
            processor = transformers.AutoProcessor.from_pretrained(model_dir,
                                                                   local_files_only=True)
        except (OSError, ValueError) as e:
            raise EngineUnavailable(f"cannot load the model config or processor from "
                                    f"{model_dir}: {e}") from e
        if config.model_type not in SUPPORTED:
            raise EngineUnavailable(f"{model_dir}: model_type {config.model_type!r} is not one "
                                    f"the transformers engine runs ({', '.join(SUPPORTED)})")
        model_cls = (transformers.WhisperForConditionalGeneration
                     if config.model_type == "whisper"
                     else transformers.Qwen2AudioForConditionalGeneration)
        options: dict[str, Any] = {}
        if cfg.transformers.attn_implementation:
            options["attn_implementation"] = str(cfg.transformers.attn_implementation)
        try:
            model = model_cls.from_pretrained(model_dir, dtype=dtype, local_files_only=True,
                                              **options)
        except OSError as e:
            raise EngineUnavailable(f"cannot load the model weights from {model_dir}: {e}") from e
        self._model = model.to(self._device).eval()
        self._dtype = dtype
        self._processor = processor
        self._is_whisper = config.model_type == "whisper"
        eos = model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [eos])
        self._whisper_ids = WhisperIds.of(processor.tokenizer) if self._is_whisper else None
        # English-only Whisper checkpoints (*.en) refuse language and task arguments.
        self._multilingual = getattr(model.generation_config, "is_multilingual", True)
        if not self._is_whisper:
            processor.tokenizer.padding_side = "left"  # generation continues each row's end

    @property
    def name(self) -> str:
        return str(self._cfg.model)

    def transcribe(self, segments: list[Segment]) -> list[str]:
        """Texts for segments of raw audio or of features prepared by `input_preparer()`."""
        return [h.text for h in self.hypotheses(segments)]

    def hypotheses(self, segments: list[Segment]) -> list[Hypothesis]:
        """Texts with their average token log-probability (from the scores generate returns)."""
        for i, seg in enumerate(segments):
            if seg.prepared is None:
                _check_audio(seg.audio, i)
        size = int(self._cfg.batch_size)
        out: list[Hypothesis] = []
        for start in range(0, len(segments), size):
            batch = segments[start:start + size]
            out += self._hypotheses(self._whisper(batch) if self._is_whisper
                                    else self._qwen2_audio(batch))
        return out

    @classmethod
    def packs(cls, engine_cfg: DictConfig) -> bool:
        """Whisper writes timestamps to split a packed window by; Qwen2-Audio does not."""
        config = json.loads((_model_dir(str(engine_cfg.model)) / "config.json").read_text())
        return config.get("model_type") == "whisper"

    def hypotheses_packed(self, window: Segment, members: list[Member]
                          ) -> list[Hypothesis | None]:
        return self.hypotheses_windows([PackedWindow(window, tuple(members))])[0]

    def hypotheses_windows(self, windows: list[PackedWindow]) -> list[list[Hypothesis | None]]:
        """Windows decoded in batches with Whisper's timestamps, each split back to its clips
        by time, with their tokens' mean log-probability."""
        if not self._is_whisper:
            raise NotImplementedError("only Whisper writes timestamps to split a window by")
        for i, w in enumerate(windows):
            if w.segment.prepared is None:
                _check_audio(w.segment.audio, i)
        size = int(self._cfg.batch_size)
        decode = lambda t: self._processor.tokenizer.decode(t, skip_special_tokens=True)  # noqa: E731
        out: list[list[Hypothesis | None]] = []
        for start in range(0, len(windows), size):
            batch = windows[start:start + size]
            for got, w in zip(self._whisper([w.segment for w in batch], timestamps=True), batch,
                              strict=True):
                out.append(packed_hypotheses(timed_pieces(got.tokens, self._whisper_ids, decode,
                                                           got.logprobs),
                                             list(w.members)))
        return out

    def input_preparer(self) -> InputPreparer | None:
        """Whisper: its log-mel features, made in the decode actors. Qwen2-Audio: None (its
        processor makes features and prompt tokens together, from the raw audio)."""
        return WhisperFeatures(str(self._model_dir)) if self._is_whisper else None

    def close(self) -> None:
        del self._model
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()

    def _language(self, seg: Segment) -> str | None:
        return seg.language or self._cfg.language

    def _generate_kwargs(self) -> dict[str, Any]:
        temperature = float(self._cfg.temperature)
        kwargs: dict[str, Any] = {"max_new_tokens": int(self._cfg.max_new_tokens),
                                  "num_beams": int(self._cfg.beam_size),
                                  "do_sample": temperature > 0}
        if temperature > 0:
            kwargs["temperature"] = temperature
        # the scores give each text's average token log-probability (a quality signal)
        kwargs.update(return_dict_in_generate=True, output_scores=True)
        return kwargs

    def _whisper(self, batch: list[Segment], timestamps: bool = False
                 ) -> list[Generated]:
        """Each segment's output tokens and their log-probabilities, one generate call per
        language (it is a forced decoder token)."""
        out: list[Generated] = [Generated([], [])] * len(batch)
        by_language: dict[str | None, list[int]] = {}
        for i, seg in enumerate(batch):
            by_language.setdefault(self._language(seg), []).append(i)
        for language, idx in by_language.items():
            features = self._whisper_features([batch[i] for i in idx])
            lang_task = ({"language": language, "task": self._cfg.task}
                         if self._multilingual else {})
            kwargs = self._generate_kwargs()
            if timestamps:
                kwargs["max_new_tokens"] = WINDOW_MAX_TOKENS
            with self._torch.inference_mode():
                got = self._model.generate(features, **lang_task, return_timestamps=timestamps,
                                           **kwargs)
            rows = self._timestamped_tokens(got) if timestamps else self._tokens(got)
            for i, tokens in zip(idx, rows, strict=True):
                out[i] = tokens
        return out

    def _whisper_features(self, segments: list[Segment]) -> Any:
        """The (n, n_mels, 3000) input tensor: prepared features as they are, and those of raw
        audio segments computed here."""
        raw = [seg.audio for seg in segments if seg.prepared is None]
        made = iter(self._processor.feature_extractor(
            raw, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features if raw else [])
        stacked = np.stack([next(made) if seg.prepared is None else seg.prepared
                            for seg in segments])
        return self._torch.from_numpy(stacked).to(self._device, self._dtype)

    def _qwen2_audio(self, batch: list[Segment]) -> list[Generated]:
        prompts = [self._processor.apply_chat_template(
            audio_chat_messages(self._cfg.instruction, self._language(seg),
                                self._cfg.system_prompt),
            add_generation_prompt=True, tokenize=False) for seg in batch]
        inputs = self._processor(text=prompts, audio=[seg.audio for seg in batch],
                                 sampling_rate=SAMPLE_RATE, return_tensors="pt", padding=True)
        inputs = inputs.to(self._device)
        inputs["input_features"] = inputs["input_features"].to(self._dtype)
        with self._torch.inference_mode():
            out = self._model.generate(**inputs, **self._generate_kwargs())
        return self._tokens(out)

    def _tokens(self, out: Any) -> list[Generated]:
        """Each row's generated tokens (the prompt's cut) and their log-probabilities, up to
        and with its end token (what follows is padding)."""
        steps = len(out.scores)
        new = out.sequences[:, out.sequences.shape[1] - steps:]
        logps = self._model.compute_transition_scores(out.sequences, out.scores,
                                                      normalize_logits=True)
        return [self._until_end(ids, lp) for ids, lp in zip(new.tolist(), logps.float().tolist())]

    def _timestamped_tokens(self, out: dict[str, Any]) -> list[Generated]:
        """`_tokens` of a generate call with timestamps: Transformers' Whisper returns each
        row's underlying generate result with its segments (the same result for every segment
        of a window of at most 30 s); a row without a segment wrote nothing."""
        rows: list[Generated] = []
        for segments in out["segments"]:
            if not segments:
                rows.append(Generated([], []))
                continue
            result = segments[0]["result"]
            steps = len(result["scores"])
            ids = result["sequences"][-steps:].tolist()
            logps = self._torch.log_softmax(self._torch.stack(result["scores"]).float(), dim=-1)
            rows.append(self._until_end(ids, logps.gather(1, self._torch.tensor(ids)[:, None])
                                        .squeeze(1).tolist()))
        return rows

    def _until_end(self, ids: list[int], logprobs: list[float]) -> Generated:
        """A row's tokens up to and with its end token (what follows is padding)."""
        n = next((k + 1 for k, t in enumerate(ids) if t in self._eos), len(ids))
        return Generated(ids[:n], logprobs[:n])

    def _hypotheses(self, rows: list[Generated]) -> list[Hypothesis]:
        """Texts with each one's mean token log-probability."""
        texts = self._processor.tokenizer.batch_decode([r.tokens for r in rows],
                                                       skip_special_tokens=True)
        return [Hypothesis(text.strip(), sum(r.logprobs) / len(r.logprobs) if r.logprobs else None)
                for text, r in zip(texts, rows)]


@dataclass(frozen=True)
class Generated:
    """One row's output tokens, up to and with its end token, and their log-probabilities."""

    tokens: list[int]
    logprobs: list[float]


class WhisperFeatures:
    """A Whisper model's log-mel features of one segment, made in a decode actor.

    Only the model directory is pickled; the feature extractor (its processor files, read from
    that directory, which every process of the node sees) loads on first use where it runs.
    """

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self._extractor: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"model_dir": self.model_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["model_dir"])

    def prepare(self, audio: np.ndarray, language: str | None,
                timestamps: bool = False) -> np.ndarray:
        """Features (n_mels, 3000), float32; the language is forced later, by the engine."""
        _check_audio(audio)
        if self._extractor is None:
            from transformers import WhisperFeatureExtractor

            self._extractor = WhisperFeatureExtractor.from_pretrained(self.model_dir,
                                                                      local_files_only=True)
        features = self._extractor(audio, sampling_rate=SAMPLE_RATE,
                                   return_tensors="np").input_features[0]
        return np.asarray(features, dtype=np.float32)


def _check_audio(audio: np.ndarray, i: int | None = None) -> None:
    """Refuse what the feature extractor would silently truncate or choke on."""
    where = "" if i is None else f"segment {i}: "
    if audio.ndim != 1:
        raise ValueError(f"{where}audio must be mono (1-D), got shape {audio.shape}")
    if audio.size == 0:
        raise ValueError(f"{where}audio is empty")
    if audio.size > WINDOW_S * SAMPLE_RATE:
        raise ValueError(f"{where}{audio.size / SAMPLE_RATE:.2f} s is longer than the "
                         f"model's {WINDOW_S:.0f} s window (segment it first)")


def _model_dir(model: str) -> Path:
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        why = "does not exist" if not path.exists() else "has no config.json"
        raise EngineUnavailable(
            f"engine.model={model!r} {why}: the transformers engine needs a local model "
            f"directory (a Hugging Face checkpoint with its processor files, e.g. made with "
            f"`hf download ORG/MODEL --local-dir DIR` on a machine with network); nothing is "
            f"downloaded at run time")
    return path


def _import_transformers():
    try:
        import torch
        import transformers
    except ImportError as e:
        raise EngineUnavailable(f"the transformers engine needs torch and transformers "
                                f"({e}): pip install 'asrd[transformers]'") from e
    return torch, transformers


def _device(torch, device: str):
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EngineUnavailable(f"engine.device={device!r} but torch {torch.__version__} sees "
                                f"no CUDA GPU here")
    return torch.device(device)


def _dtype(torch, compute_type: str, device) -> Any:
    """The config's compute_type as a torch dtype; int8 (faster-whisper's CPU default) means
    float32 on CPU and float16 on GPU, transformers having no int8 path without extra packages."""
    if compute_type not in DTYPES:
        raise ConfigError(f"invalid config value engine.compute_type={compute_type!r}: the "
                          f"transformers engine takes one of {DTYPES}")
    if compute_type == "int8":
        return torch.float32 if device.type == "cpu" else torch.float16
    return getattr(torch, compute_type)
