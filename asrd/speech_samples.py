"""Sample speech with known text, made on this machine (espeak-ng, then sox/ffmpeg conversions),
so that the demo and the tests can measure word error rate without downloading anything."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "speech recognition turns spoken words into written text",
    "please call stella and ask her to bring these things with her from the store",
    "the weather today is sunny with a light breeze from the west",
    "large audio collections need careful processing on many machines",
    "every shard is written once and checked before the merge",
    "she sells sea shells by the sea shore",
    "a good transcript makes the data useful for training new models",
]

# (extension, sample rate, channels): the formats and rates users feed us.
FORMATS = [("wav", 16000, 1), ("flac", 48000, 2), ("mp3", 44100, 1), ("ogg", 48000, 1),
           ("m4a", 22050, 1), ("wav", 8000, 1), ("flac", 44100, 1), ("opus", 48000, 2)]


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RuntimeError(f"{tool} is not installed: apt-get install espeak-ng sox ffmpeg")
    return path


def speak(text: str, out: Path, rate: int = 16000, channels: int = 1, speed: int = 150) -> Path:
    """espeak-ng speech converted by ffmpeg to `out`'s format, rate and channel count."""
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_name(out.name + ".espeak.wav")
    if out.suffix == ".opus" and rate not in (8000, 12000, 16000, 24000, 48000):
        rate = 48000  # the only rates Opus encodes
    subprocess.run([need("espeak-ng"), "-s", str(speed), "-w", str(raw), text], check=True,
                   capture_output=True)
    codec = {"ogg": ["-c:a", "libvorbis"], "opus": ["-c:a", "libopus"], "m4a": ["-c:a", "aac"],
             "mp3": ["-c:a", "libmp3lame"]}.get(out.suffix[1:], [])
    subprocess.run([need("ffmpeg"), "-nostdin", "-loglevel", "error", "-y", "-i", str(raw),
                    "-ar", str(rate), "-ac", str(channels), *codec, str(out)], check=True)
    raw.unlink()
    return out


def non_speech(kind: str, seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Audio with no speech in it: `silence`, white `noise`, a 440 Hz `tone`, or a `sweep`
    (100 Hz to 4 kHz, music-like), float32 mono."""
    t = np.arange(int(seconds * rate)) / rate
    if kind == "silence":
        x = np.zeros_like(t)
    elif kind == "noise":
        x = 0.1 * np.random.default_rng(seed).standard_normal(len(t))
    elif kind == "tone":
        x = 0.3 * np.sin(2 * np.pi * 440 * t)
    elif kind == "sweep":
        x = 0.3 * np.sin(2 * np.pi * (100 * t + (4000 - 100) * t ** 2 / (2 * seconds)))
    else:
        raise ValueError(f"unknown non-speech kind {kind!r}")
    return x.astype(np.float32)


NON_SPEECH = ("silence", "noise", "tone", "sweep")


def make_corpus(folder: Path, n: int = 8, with_non_speech: bool = False) -> Path:
    """`n` recordings in mixed formats under `folder`, plus `manifest.jsonl` with the reference
    text (`reference`) of each; with `with_non_speech`, also 20 s each of silence, noise, a tone
    and a sweep (reference ""). Returns the manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        text = SENTENCES[i % len(SENTENCES)]
        ext, rate, ch = FORMATS[i % len(FORMATS)]
        path = speak(text, folder / f"utt{i:03d}.{ext}", rate, ch)
        rows.append({"path": path.name, "reference": text, "language": "en"})
    for kind in NON_SPEECH if with_non_speech else ():
        sf.write(folder / f"{kind}.flac", non_speech(kind, 20.0), 16000)
        rows.append({"path": f"{kind}.flac", "reference": "", "language": "en"})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


# Spoken-language sentences in other languages (espeak-ng's own voices), for language tests.
FOREIGN = {
    "de": ["guten morgen, wie geht es dir heute",
           "der zug nach berlin fährt um acht uhr ab"],
    "es": ["buenos días, cómo estás hoy",
           "el tren a madrid sale a las ocho de la mañana"],
    "fr": ["bonjour, comment allez-vous aujourd'hui",
           "le train pour paris part à huit heures du matin"],
}
# English voices and speeds (words per minute) of the labelled set: accents, a female variant.
VOICES = ("en", "en-us", "en-gb-x-rp", "en+f3", "en-us+m3")
SPEEDS = (130, 160, 190)


def make_labelled_set(folder: Path, voices: tuple[str, ...] = VOICES,
                      speeds: tuple[int, ...] = SPEEDS, non_speech_s: float = 10.0) -> Path:
    """Speech with known text as 16 kHz mono FLAC: every English sentence in every voice at
    every speed (8 x 5 x 3 = 120 clips by default), two sentences in each of German, Spanish
    and French (espeak-ng's voice of the language, at 150 wpm), and `non_speech_s` of each
    kind of non-speech (reference ""). `manifest.jsonl` holds each clip's `reference`,
    `language`, `voice` and `speed`. Deterministic: the same files every time. Returns the
    manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []

    def add(text: str, language: str, voice: str, speed: int) -> None:
        name = f"{language}-{len(rows):04d}.flac"
        raw = folder / (name + ".espeak.wav")
        subprocess.run([need("espeak-ng"), "-v", voice, "-s", str(speed), "-w", str(raw), text],
                       check=True, capture_output=True)
        audio, rate = sf.read(raw, dtype="float32")
        raw.unlink()
        sf.write(folder / name, soxr.resample(audio, rate, 16000), 16000, subtype="PCM_16")
        rows.append({"id": name, "path": name, "reference": text, "language": language,
                     "voice": voice, "speed": speed})

    for voice in voices:  # neighbours differ in text, as in a real corpus (packing sees them)
        for speed in speeds:
            for text in SENTENCES:
                add(text, "en", voice, speed)
    for language, texts in FOREIGN.items():
        for text in texts:
            add(text, language, language, 150)
    for kind in NON_SPEECH:
        name = f"{kind}.flac"
        sf.write(folder / name, non_speech(kind, non_speech_s), 16000, subtype="PCM_16")
        rows.append({"id": name, "path": name, "reference": "", "language": "en",
                     "voice": "", "speed": 0})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return manifest


# Sentences per language for language ID (espeak-ng's voice of each language).
SPOKEN = {
    "en": ["good morning, how are you today? i would like a cup of coffee.",
           "the train to london leaves at eight o'clock in the morning.",
           "we walked along the river until the sun went down.",
           "please close the window, it is getting cold in here."],
    "de": ["guten morgen, wie geht es dir heute? ich möchte gerne einen kaffee trinken.",
           "der zug nach berlin fährt um acht uhr morgens ab.",
           "wir sind am fluss entlang gegangen, bis die sonne unterging.",
           "bitte mach das fenster zu, es wird hier drinnen kalt."],
    "es": ["buenos días, ¿cómo estás hoy? quiero tomar un café con leche.",
           "el tren a madrid sale a las ocho de la mañana.",
           "caminamos por el río hasta que se puso el sol.",
           "por favor, cierra la ventana, aquí dentro hace frío."],
    "fr": ["bonjour, comment allez-vous aujourd'hui? je voudrais boire un café.",
           "le train pour paris part à huit heures du matin.",
           "nous avons marché le long de la rivière jusqu'au coucher du soleil.",
           "ferme la fenêtre, s'il te plaît, il commence à faire froid ici."],
}


def make_language_set(folder: Path, languages: tuple[str, ...] = tuple(SPOKEN),
                      per_language: int = 4, speeds: tuple[int, ...] = (150,)) -> Path:
    """Speech in several languages as 16 kHz mono FLAC: `per_language` clips of two sentences
    of SPOKEN in each language, at each speed (6-10 s: Whisper's detection is unsure on a
    sentence of a few words). `manifest.jsonl` holds each clip's `reference` and its
    `spoken` language: not `language`, which would force the transcription language.
    Deterministic. Returns the manifest path."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for language in languages:
        for speed in speeds:
            said = SPOKEN[language]
            for i in range(per_language):  # two sentences a clip, each clip another pair
                text = f"{said[i % len(said)]} {said[(i + 1) % len(said)]}"
                name = f"{language}-{len(rows):04d}.flac"
                raw = folder / (name + ".espeak.wav")
                subprocess.run([need("espeak-ng"), "-v", language, "-s", str(speed), "-w",
                                str(raw), text], check=True, capture_output=True)
                audio, rate = sf.read(raw, dtype="float32")
                raw.unlink()
                sf.write(folder / name, soxr.resample(audio, rate, 16000), 16000,
                         subtype="PCM_16")
                rows.append({"id": name, "path": name, "reference": text, "spoken": language,
                             "speed": speed})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return manifest


if __name__ == "__main__":
    import sys

    print(make_labelled_set(Path(sys.argv[1])))
