"""Any speech model vLLM can transcribe with: the model's own vLLM class makes its prompt.

vLLM gives many model classes a transcription interface (`SupportsTranscription`): the class
builds the prompt from the audio, the language, the task and an optional text prompt
(`get_generation_prompt`), states the sample rate and the longest clip it takes
(`get_speech_to_text_config`) and cleans its raw output (`post_process_output`). asrd asks the
class for these instead of carrying prompt code per model, so a model of that list runs with
`engine.kind: vllm` and `engine.model` pointing at its checkpoint folder, and nothing else.
Whisper and Qwen2-Audio keep asrd's own prompts (`vllm_inputs.PromptBuilder`): they give the
quality signals, packing by timestamps and the measured rates; `engine.vllm.prompts: model` sends
Whisper through its class too (for comparison).

What each class writes lands in the row as the model gives it: the text after
`post_process_output`, and a spoken language where the output states one (Qwen3-ASR's
"language X<asr_text>" prefix; FireRedLID's whole output is a language label) in the
`audio_language` column, as Whisper's own detection is. MOSS transcribe-diarize writes speaker
turns inline (`[0.48][S01]Welcome.[1.66][1.70][S02]Thanks.[3.20]`: start, speaker, text, end);
they go to the `speaker_turns` column and the text keeps only their words. No class of this
list gives timestamps asrd could split a packed window by (vLLM's only timestamped output is
Whisper's), so packing stays Whisper's.
"""

from __future__ import annotations

import functools
import inspect
import re
import uuid
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from asrd.engines.base import EngineUnavailable, Hypothesis, SpeakerTurn

SAMPLE_RATE = 16000  # what asrd's decode stage delivers

# The architectures (config.json "architectures") whose class in vLLM 0.25.0 implements
# transcription, and what their output holds. The table answers without importing vLLM (CPU
# nodes, config checks) and is the list an unknown architecture's error names; vLLM's registry
# is asked only of an architecture the table lacks (one a newer vLLM knows). Qwen3-ASR's forced
# aligner is left out: it aligns a given text, it does not transcribe.
TRANSCRIPTION_ARCHITECTURES: dict[str, str] = {
    "WhisperForConditionalGeneration": "text (asrd's own Whisper path by default)",
    "Qwen3ASRForConditionalGeneration": "text, language",
    "Qwen3ASRRealtimeGeneration": "text, language",
    "Qwen3OmniMoeForConditionalGeneration": "text",
    "VoxtralForConditionalGeneration": "text",
    "VoxtralRealtimeGeneration": "text",
    "GraniteSpeechForConditionalGeneration": "text",
    "GraniteSpeechPlusForConditionalGeneration": "text",
    "Gemma3nForConditionalGeneration": "text",
    "MoonshotKimiaForCausalLM": "text",
    "GlmAsrForConditionalGeneration": "text",
    "FunASRForConditionalGeneration": "text",
    "FireRedASR2ForConditionalGeneration": "text",
    "FireRedLIDForConditionalGeneration": "language",
    "CohereAsrForConditionalGeneration": "text",
    "MossTranscribeDiarizeForConditionalGeneration": "text, speaker turns",
}
LANGUAGE_ID = {"FireRedLIDForConditionalGeneration"}  # the output is a language label
# vLLM lists forced aligners among its transcription classes; they transcribe nothing
ALIGNERS = {"Qwen3ASRForcedAlignerForTokenClassification"}

_LANGUAGE_PREFIX = re.compile(r"^\s*language\s+([A-Za-z][A-Za-z ]*?)\s*<asr_text>")
# the output is speaker turns, `[start][Sxx]text[end]` each, in ordinary text (not special tokens)
DIARIZE = {"MossTranscribeDiarizeForConditionalGeneration"}
_TIME = r"\[(\d+(?:\.\d+)?)\]"  # [1.66]: seconds from the start of the engine input
_TURN_HEAD = re.compile(_TIME + r"\s*\[(S\d+)\]")
_TURN_END = re.compile(_TIME)


def transcription_architectures() -> tuple[str, ...]:
    """The architectures asrd can run through their vLLM class (vLLM 0.25.0's list)."""
    return tuple(sorted(TRANSCRIPTION_ARCHITECTURES))


@functools.lru_cache(maxsize=None)
def vllm_transcribes(arch: str) -> bool | None:
    """Whether the installed vLLM's registry says `arch` supports transcription; None where
    vLLM does not import here (the table then decides)."""
    try:
        from vllm.model_executor.models import ModelRegistry
    except ImportError:
        return None
    if arch not in ModelRegistry.get_supported_archs():
        return False
    info = ModelRegistry._try_inspect_model_cls(arch)
    return bool(info is not None and info.supports_transcription)


def check_architecture(archs: list[str], where: str) -> str:
    """The first of `archs` that vLLM can transcribe with; refuses with the list otherwise."""
    for arch in archs:  # the table first: asking vLLM's registry imports the model's module
        if arch in TRANSCRIPTION_ARCHITECTURES or (arch not in ALIGNERS and vllm_transcribes(arch)):
            return arch
    raise EngineUnavailable(
        f"{where}: architectures {archs} cannot be transcribed with vLLM; the vllm engine runs "
        f"Qwen2AudioForConditionalGeneration and {', '.join(transcription_architectures())}")


@dataclass(frozen=True)
class TranscriptionSpec:
    """What a request asks of the model (plain values: it travels to the decode actors)."""

    task: str  # transcribe | translate
    language: str | None  # the config's language; a segment's own language wins
    request_prompt: str  # optional text that guides the model (context, hotwords' sentence)


@dataclass(frozen=True)
class TranscriptionText:
    """A request's output, cleaned by the model's class."""

    text: str
    language: str | None  # the spoken language, where the output states it
    speaker_turns: tuple[SpeakerTurn, ...] | None = None  # a diarising model's turns

    def on(self, h: Hypothesis) -> Hypothesis:
        """The engine's hypothesis of this output (its signals) with what the output says."""
        return replace(h, text=self.text, language=self.language or h.language,
                       speaker_turns=self.speaker_turns)


class TranscriptionPrompts:
    """Prompts, limits and output cleaning of one model, asked of its vLLM class.

    Built where vLLM's model config is at hand: in the engine's process, or in a decode actor
    from the engine's `VllmConfig` (the class then builds the same prompts on the CPU).
    """

    def __init__(self, spec: TranscriptionSpec, model_config: Any):
        from vllm.model_executor.model_loader import get_model_cls

        self.spec = spec
        self.model_config = model_config
        self.model_cls = get_model_cls(model_config)
        self.arch = model_config.architectures[0]
        self.stt = self.model_cls.get_speech_to_text_config(model_config, spec.task)
        self.sample_rate = int(self.stt.sample_rate)
        self.max_clip_s = self.stt.max_audio_clip_s  # None: the model takes any length
        # vLLM 0.25.0's FireRedLID still has the older keyword signature
        self._keywords = "stt_params" not in inspect.signature(
            self.model_cls.get_generation_prompt).parameters
        self._language_names = {name.lower(): code for code, name in
                                getattr(self.model_cls, "supported_languages", {}).items()}

    def check(self, audio: np.ndarray, index: int = 0) -> None:
        """Refuse what the model cannot take, before anything is sent."""
        if audio.ndim != 1:
            raise ValueError(f"segment {index}: audio must be mono (1-D), got shape {audio.shape}")
        seconds = audio.shape[0] / SAMPLE_RATE
        if self.max_clip_s is not None and seconds > self.max_clip_s:
            raise ValueError(f"segment {index} is {seconds:.3f} s, longer than the model's "
                             f"{self.max_clip_s} s clip; it was not sent")

    def prompt(self, audio: np.ndarray, language: str | None, audio_id: str | None = None,
               timestamps: bool = False) -> dict[str, Any]:
        """The class's prompt for one segment; `audio_id` keys vLLM's encoder cache (a unique
        id instead of hashing the audio). `timestamps` must be False: these models are not
        packed."""
        if timestamps:
            raise ValueError(f"{self.arch}: packed windows are Whisper's alone")
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if self.sample_rate != SAMPLE_RATE:
            import soxr

            audio = soxr.resample(audio, SAMPLE_RATE, self.sample_rate)
        language = self.model_cls.validate_language(language or self.spec.language)
        if self._keywords:
            prompt = self.model_cls.get_generation_prompt(
                audio=audio, stt_config=self.stt, model_config=self.model_config,
                language=language, task_type=self.spec.task,
                request_prompt=self.spec.request_prompt, to_language=None)
        else:
            from vllm.config.speech_to_text import SpeechToTextParams

            prompt = self.model_cls.get_generation_prompt(SpeechToTextParams(
                audio=audio, stt_config=self.stt, model_config=self.model_config,
                language=language, task_type=self.spec.task,
                request_prompt=self.spec.request_prompt))
        return _with_uuids(dict(prompt), audio_id or uuid.uuid4().hex)

    def text(self, raw: str) -> TranscriptionText:
        """The row's text and the language the output states (if any)."""
        if self.arch in LANGUAGE_ID:
            label = raw.strip()
            return TranscriptionText("", self._language_names.get(label.lower(), label or None))
        text = self.model_cls.post_process_output(raw).strip()
        if self.arch in DIARIZE:
            return speaker_turns(text)
        match = _LANGUAGE_PREFIX.match(raw) if "<asr_text>" not in text else None
        language = None
        if match:  # the class took the label off: it was the model's statement of language
            name = match.group(1).strip()
            language = self._language_names.get(name.lower(), name)
        return TranscriptionText(text, language)


def speaker_turns(raw: str) -> TranscriptionText:
    """A diarising model's output split into its turns, and the readable text: the turns' texts
    and whatever did not parse, in order, joined by spaces.

    The grammar is strict: a turn starts at `[t][Sxx]` and its text runs to the first `[t]`
    after it (its end) or to the next turn's start. Nothing else is a tag: text before the first
    turn, after a turn's end, a timestamp without a speaker or other brackets stay in the text
    as written, so no word is lost to malformed output. A turn without an end takes the next
    turn's start; the last one's stays None (the row's assembly gives it its input's end).
    """
    heads = list(_TURN_HEAD.finditer(raw))
    pieces = [raw[:heads[0].start()] if heads else raw]
    turns = []
    for i, head in enumerate(heads):
        following = heads[i + 1] if i + 1 < len(heads) else None
        body = raw[head.end():following.start() if following else len(raw)]
        end = _TURN_END.search(body)
        if end:
            said, end_s, rest = body[:end.start()], float(end.group(1)), body[end.end():]
        else:
            said, rest = body, ""
            end_s = float(following.group(1)) if following else None
        turns.append(SpeakerTurn(head.group(2), float(head.group(1)), end_s, said.strip()))
        pieces += [said, rest]
    text = " ".join(p.strip() for p in pieces if p.strip())
    return TranscriptionText(text, None, tuple(turns))


def _with_uuids(prompt: dict[str, Any], audio_id: str) -> dict[str, Any]:
    """One id per audio item of the prompt (the encoder-decoder kind's sits in its encoder
    prompt)."""
    part = prompt.get("encoder_prompt", prompt)
    if isinstance(part, dict) and "multi_modal_data" in part:
        audio = part["multi_modal_data"].get("audio")
        n = len(audio) if isinstance(audio, list) else 1
        part["multi_modal_uuids"] = {"audio": [f"{audio_id}-{i}" for i in range(n)]}
    return prompt
