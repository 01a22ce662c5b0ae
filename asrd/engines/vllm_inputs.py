"""vLLM engine inputs: the prompt of a segment, and rendering it outside the engine's process.

Why rendering moves out (measured on an H100, bench/RESULTS.md): for a small model such as
Whisper-base, the engine actor's one Python process was the limit, not the GPU. Turning a clip
into an engine input (the model's processor: log-mel features, prompt tokens, placeholders) costs
milliseconds of Python per clip under that process's one GIL, beside the engine's own request and
output handling. `InputRenderer` runs vLLM's own renderer in every CPU decode actor instead, with
the engine's configuration, so input preparation grows with the decode actors and the engine
process only submits inputs that are ready, as in the GPU-only ceiling benchmark.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from asrd.engines import prompts
from asrd.engines.vllm_transcription import TranscriptionPrompts, TranscriptionSpec

SAMPLE_RATE = 16000
WINDOW_S = 30.0  # Whisper and Qwen2-Audio both take at most 30 s per input


@dataclass(frozen=True)
class PromptSpec:
    """What a prompt is made of, from the engine config (plain values: it travels to actors)."""

    kind: str  # "whisper" | "qwen2_audio"
    task: str
    instruction: str
    system_prompt: str | None
    language: str | None  # the config's language; a segment's own language wins
    feature_device: str  # where the processor computes log-mel features: cuda | cpu

    @classmethod
    def from_engine_cfg(cls, kind: str, engine_cfg: Any, feature_device: str) -> "PromptSpec":
        return cls(kind, str(engine_cfg.task), str(engine_cfg.instruction),
                   engine_cfg.system_prompt, engine_cfg.language, feature_device)


class PromptBuilder:
    """The vLLM prompt of one segment: the model's text prompt (cached per language) and audio."""

    def __init__(self, spec: PromptSpec, tokenizer: Any):
        self.spec, self.tokenizer = spec, tokenizer
        self._texts: dict[tuple[str | None, bool], str] = {}

    def text(self, language: str | None, timestamps: bool = False) -> str:
        """The text part of the prompt (the same for every clip of one language); `timestamps`
        (Whisper) for a packed window, whose text is split back to its clips by time."""
        key = (language, timestamps)
        if key not in self._texts:
            if self.spec.kind == "whisper":
                self._texts[key] = prompts.whisper_decoder_prompt(language, self.spec.task,
                                                                  timestamps)
            else:
                self._texts[key] = self._qwen_chat(language)
        return self._texts[key]

    def _qwen_chat(self, language: str | None) -> str:
        messages = prompts.audio_chat_messages(self.spec.instruction, language,
                                               self.spec.system_prompt)
        text = self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=True)
        if text.count("<|AUDIO|>") != 1:
            raise ValueError(f"the chat template did not render one <|AUDIO|> placeholder: "
                             f"{text!r}")
        return text

    @staticmethod
    def check(audio: np.ndarray, index: int = 0) -> None:
        check_window(audio, index)

    def prompt(self, audio: np.ndarray, language: str | None, audio_id: str,
               timestamps: bool = False) -> dict[str, Any]:
        """vLLM's prompt dict; `audio_id` must be unique (it keys vLLM's encoder cache)."""
        mm: dict[str, Any] = {
            "multi_modal_data": {"audio": (np.ascontiguousarray(audio, dtype=np.float32),
                                           SAMPLE_RATE)},
            # an id instead of hashing the audio (the processor cache is off anyway)
            "multi_modal_uuids": {"audio": [audio_id]}}
        if self.spec.feature_device != "cpu":
            mm["mm_processor_kwargs"] = {"device": self.spec.feature_device}
        text = self.text(language or self.spec.language, timestamps)
        if self.spec.kind == "whisper":
            return {"encoder_prompt": {"prompt": "", **mm}, "decoder_prompt": text}
        return {"prompt": text, **mm}


def check_window(audio: np.ndarray, index: int = 0) -> None:
    """Refuse what the model cannot take, before anything is sent (the processor would cut a
    longer segment silently)."""
    if audio.ndim != 1:
        raise ValueError(f"segment {index}: audio must be mono (1-D), got shape {audio.shape}")
    if audio.shape[0] > WINDOW_S * SAMPLE_RATE:
        raise ValueError(f"segment {index} is {audio.shape[0] / SAMPLE_RATE:.3f} s, longer than "
                         f"the model's {WINDOW_S:.0f} s window; it was not sent")


Prompts = PromptBuilder | TranscriptionPrompts


def prompt_maker(spec: PromptSpec | TranscriptionSpec, tokenizer: Any, model_config: Any
                 ) -> Prompts:
    """asrd's own prompts (Whisper, Qwen2-Audio) or the model's vLLM class's (any other)."""
    if isinstance(spec, TranscriptionSpec):
        return TranscriptionPrompts(spec, model_config)
    return PromptBuilder(spec, tokenizer)


def render(renderer: Any, model_config: Any, prompt: dict[str, Any]) -> Any:
    """One prompt through vLLM's renderer (synchronously, in the calling thread)."""
    from vllm.renderers.inputs.preprocess import parse_model_prompt

    (engine_input,) = renderer.render_cmpl([parse_model_prompt(model_config, prompt)])
    return engine_input


class InputRenderer:
    """Makes finished vLLM engine inputs in another process (a CPU decode actor).

    It is pickled to the decode actors with the engine's own `VllmConfig`, so the inputs are
    exactly those the engine would have made; vLLM's renderer (the model's processor and
    tokenizer) is built on first use where it runs. Features are computed on the CPU there: a
    decode actor must not open a CUDA context on the engines' GPU.
    """

    def __init__(self, vllm_config: Any, spec: PromptSpec | TranscriptionSpec):
        self.vllm_config = vllm_config
        self.spec = replace(spec, feature_device="cpu") if isinstance(spec, PromptSpec) else spec
        self._renderer: Any = None
        self._prompts: Prompts | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"vllm_config": self.vllm_config, "spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["vllm_config"], state["spec"])

    def _setup(self) -> None:
        from vllm.renderers import renderer_from_config

        self._renderer = renderer_from_config(self.vllm_config)
        self._prompts = prompt_maker(self.spec, self._renderer.get_tokenizer(),
                                     self.vllm_config.model_config)

    def prepare(self, audio: np.ndarray, language: str | None, timestamps: bool = False) -> Any:
        """The engine input for one segment (refuses one longer than the model takes)."""
        if self._renderer is None:
            self._setup()
        self._prompts.check(audio)
        prompt = self._prompts.prompt(audio, language, uuid.uuid4().hex, timestamps)
        return render(self._renderer, self.vllm_config.model_config, prompt)
