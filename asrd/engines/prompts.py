"""The prompt layer: what the models are asked, in one place so that every engine asks the same.

Instruction-following audio LLMs (Qwen2-Audio-Instruct and the like) get a chat: an optional
system turn, then a user turn holding the audio placeholder and the instruction. Whisper gets its
decoder prompt of special tokens. The LLM judge gets a system turn and a user turn made from a
template with `{text}`. Engines render the chat with their model's own chat template, which turns
the audio part into the model's audio tokens (`<|audio_bos|><|AUDIO|><|audio_eos|>`).
"""

from __future__ import annotations

from typing import Any

TEXT_PLACEHOLDER = "{text}"
LANGUAGE_PLACEHOLDER = "{language}"

Message = dict[str, Any]


def language_name(code: str) -> str:
    """"en" -> "English", by Whisper's language table; an unknown code is returned as given."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return LANGUAGES.get(code.lower(), code).title() if code else code


def instruction_text(instruction: str, language: str | None) -> str:
    """The instruction with the language filled in.

    A `{language}` placeholder is replaced by the language's name ("the spoken language" when it
    is unknown); without one, a known language is stated in a sentence appended to the
    instruction, so that one config serves a corpus of many languages.
    """
    name = language_name(language) if language else None
    if LANGUAGE_PLACEHOLDER in instruction:
        return instruction.replace(LANGUAGE_PLACEHOLDER, name or "the spoken language")
    if name is None:
        return instruction
    return f"{instruction.rstrip()} The speech is in {name}."


def audio_chat_messages(instruction: str, language: str | None,
                        system_prompt: str | None = None) -> list[Message]:
    """The chat for one audio input; render it with the processor's `apply_chat_template`."""
    messages: list[Message] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    # The "audio" key marks the part for real Qwen2-Audio templates (they test for the key, not
    # the type); the audio itself goes to the processor or engine beside the prompt.
    messages.append({"role": "user", "content": [
        {"type": "audio", "audio": ""},
        {"type": "text", "text": instruction_text(instruction, language)},
    ]})
    return messages


def whisper_decoder_prompt(language: str | None, task: str = "transcribe",
                           timestamps: bool = False) -> str:
    """Whisper's decoder prompt as text (for engines that take a text prompt, such as vLLM).

    With `timestamps` the model writes a timestamp token at each end of every piece of text.
    Without a language, a transcription's prompt ends at <|startoftranscript|>: Whisper then
    writes the language it hears (its detection, in the same pass), the task and, as it
    chooses, timestamps; a token after <|startoftranscript|> other than a language is one the
    model never saw there in training. A translation without a language keeps its task token
    (the one pass cannot both detect and force it).
    """
    if not language and task == "transcribe":
        return "<|startoftranscript|>"
    lang = f"<|{language.lower()}|>" if language else ""
    return f"<|startoftranscript|>{lang}<|{task}|>" + ("" if timestamps else "<|notimestamps|>")


def check_judge_template(user_template: str) -> None:
    """Fail at start-up, not on the first row, when the judge template cannot hold the text."""
    if TEXT_PLACEHOLDER not in user_template:
        raise ValueError(f"judge.user_template must contain {TEXT_PLACEHOLDER} (where the "
                         f"transcript goes); got {user_template!r}")


def judge_messages(system_prompt: str | None, user_template: str, text: str) -> list[Message]:
    """The judge's chat for one transcript.

    `{text}` is substituted by plain replacement, not `str.format`, so that templates may contain
    other braces (JSON examples) and transcripts braces of their own.
    """
    messages: list[Message] = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": user_template.replace(TEXT_PLACEHOLDER, text)})
    return messages
