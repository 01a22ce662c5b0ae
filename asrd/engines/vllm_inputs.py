"""vLLM engine inputs: the prompt of a segment, and rendering it outside the engine's process.

Why rendering moves out (measured on an H100, bench/RESULTS.md): for a small model such as
Whisper-base, the engine actor's one Python process was the limit, not the GPU. Turning a clip
into an engine input (the model's processor: log-mel features, prompt tokens, placeholders) costs
milliseconds of Python per clip under that process's one GIL, beside the engine's own request and
output handling. `InputRenderer` runs vLLM's own renderer in every CPU decode actor instead, with
the engine's configuration, so input preparation grows with the decode actors and the engine
process only submits inputs that are ready, as in the GPU-only ceiling benchmark.

Under the language-ID pass the prompt's language is known only in the engine's process, after
the pass: `Relanguager` re-makes a prepared input in that language there, the prompt's text
from a per-language reference around the prepared audio part, without computing features.
"""

from __future__ import annotations

import threading
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


# --- the language-ID pass: inputs rendered before the language is known ----------------------

REFERENCE_S = 1.0  # the silent clip each language's reference input is rendered from


@dataclass(frozen=True)
class RoutedInput:
    """A segment prepared in a decode actor for the language-ID pass, before its language is
    known: the engine's input in the segment's own language (the index's, else the config's),
    which the engine actor re-makes in the identified language (`Relanguager`), and what the
    identifier needs."""

    engine: Any  # the engine's rendered input
    language: str | None  # the language it was rendered in (None: the config's)
    identifier: Any = None  # the identifier's rendered input, where it has its own processor
    audio: np.ndarray | None = None  # the raw audio, for an identifier that reads it


class RoutedPreparer:
    """The decode actors' preparer under the language-ID pass (picklable): the engine's input
    in the segment's own language, and the identifier's input where it needs one of its own
    (another model's processor) or the raw audio where it reads that (faster-whisper)."""

    def __init__(self, engine: InputRenderer, identifier: InputRenderer | None,
                 carry_audio: bool):
        self.engine, self.identifier, self.carry_audio = engine, identifier, carry_audio

    def prepare(self, audio: np.ndarray, language: str | None,
                timestamps: bool = False) -> RoutedInput:
        if timestamps:
            raise ValueError("the language-ID pass transcribes every clip alone (no packing)")
        return RoutedInput(
            self.engine.prepare(audio, language), language,
            self.identifier.prepare(audio, None) if self.identifier is not None else None,
            np.ascontiguousarray(audio, dtype=np.float32) if self.carry_audio else None)


def _audio_range(part: dict[str, Any]) -> Any:
    """The placeholder range of a decoder-only input's one audio item."""
    ranges = part["mm_placeholders"].get("audio", [])
    if len(ranges) != 1:
        raise ValueError(f"the input holds {len(ranges)} audio items (the model cut the audio "
                         "in chunks); only an input of one can be re-made in another language")
    return ranges[0]


def _with_text(part: dict[str, Any], tokens: list[int], source: dict[str, Any]
               ) -> dict[str, Any]:
    """`part` with `tokens` as its prompt and the prompt text of `source` (where it has one)."""
    out = {**part, "prompt_token_ids": tokens}
    out.pop("prompt", None)
    if "prompt" in source:
        out["prompt"] = source["prompt"]
    return out


def splice(prepared: Any, was: Any, to: Any) -> Any:
    """`prepared` (a rendered input) with the text around its audio taken from `to`, where
    `was` is an input rendered with the same prompt as `prepared` (of other audio) and `to` one
    with the wanted prompt, both by one processor. The audio's features and placeholder tokens
    stay `prepared`'s: nothing is extracted again. An encoder-decoder input (Whisper) takes
    `to`'s decoder prompt whole (its audio is the encoder's); a decoder-only one keeps its run
    of audio tokens between `to`'s text before and after the audio. Raises ValueError where
    `prepared` is not `was`'s prompt around its audio (a prompt whose text depends on the
    audio cannot be re-made so)."""
    if prepared["type"] == "enc_dec":
        dec, was_dec, to_dec = (x["decoder_prompt"] for x in (prepared, was, to))
        if list(dec["prompt_token_ids"]) != list(was_dec["prompt_token_ids"]):
            raise ValueError("the prepared decoder prompt is not the one it was said to be")
        return {**prepared, "decoder_prompt": _with_text(
            dec, list(to_dec["prompt_token_ids"]), to_dec)}
    ids, was_ids, to_ids = (list(x["prompt_token_ids"]) for x in (prepared, was, to))
    at, was_at, to_at = _audio_range(prepared), _audio_range(was), _audio_range(to)
    end, was_end, to_end = (r.offset + r.length for r in (at, was_at, to_at))
    if ids[:at.offset] != was_ids[:was_at.offset] or ids[end:] != was_ids[was_end:]:
        raise ValueError("the prepared prompt's text around its audio is not the one it was "
                         "said to be; the model's prompt depends on the audio")
    tokens = to_ids[:to_at.offset] + ids[at.offset:end] + to_ids[to_end:]
    out = _with_text(prepared, tokens, to)
    out["mm_placeholders"] = {**prepared["mm_placeholders"],
                              "audio": [replace(at, offset=to_at.offset)]}
    return out


class Relanguager:
    """Re-makes a rendered input in another language, in the engine's process, without its
    audio: the language-dependent part of a prompt comes from a reference input per language
    (a silent `REFERENCE_S` clip, rendered once per language and kept), spliced around the
    prepared input's own audio part (`splice`). Token for token what rendering the segment in
    that language would give (tests/test_relanguage.py)."""

    def __init__(self, renderer: Any, model_config: Any, prompts: Prompts):
        self.renderer, self.model_config, self.prompts = renderer, model_config, prompts
        self._references: dict[str | None, Any] = {}
        self._lock = threading.Lock()

    def reference(self, language: str | None) -> Any:
        """The input of a silent clip in `language` (None: the prompts' default)."""
        with self._lock:
            if language not in self._references:
                silence = np.zeros(int(REFERENCE_S * SAMPLE_RATE), np.float32)
                self._references[language] = render(self.renderer, self.model_config,
                                                    self.prompts.prompt(silence, language,
                                                                        uuid.uuid4().hex))
            return self._references[language]

    def relanguage(self, prepared: Any, was: str | None, language: str | None) -> Any:
        """`prepared`, rendered in language `was`, in `language` instead."""
        return splice(prepared, self.reference(was), self.reference(language))

    def splices(self) -> bool:
        """Whether this model's prompts can be re-made so: a longer clip's input keeps the
        reference's text around its audio (a prompt whose text counts the audio would not)."""
        longer = np.zeros(int(2.5 * REFERENCE_S * SAMPLE_RATE), np.float32)
        prepared = render(self.renderer, self.model_config,
                          self.prompts.prompt(longer, None, uuid.uuid4().hex))
        try:
            splice(prepared, self.reference(None), self.reference(None))
        except ValueError:
            return False
        return True
