"""Every kind of bad or awkward input users have, built on this machine."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from asrd.speech_samples import speak


def make_bad_inputs(folder: Path) -> dict[str, tuple[Path, str | None]]:
    """name -> (path, expected error reason or None when it must decode fine)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = speak("a short test of awkward inputs", folder / "good.flac", 48000, 2)
    cases: dict[str, tuple[Path, str | None]] = {}
    cases["missing"] = (folder / "does-not-exist.wav", "missing file")
    noperm = folder / "noperm.wav"
    noperm.write_bytes(good.read_bytes())
    noperm.chmod(0)
    cases["permission"] = (noperm, "unreadable")
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    cases["zero-byte"] = (empty, "empty file")
    trunc = folder / "truncated.flac"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    cases["truncated flac"] = (trunc, "corrupt audio")
    noise = folder / "random.wav"
    noise.write_bytes(np.random.default_rng(0).bytes(50_000))
    cases["random bytes"] = (noise, "corrupt audio")
    text = folder / "text.mp3"
    text.write_text("this is a text file, not audio\n" * 100)
    cases["text file"] = (text, "corrupt audio")
    zero = folder / "zero-samples.wav"
    sf.write(zero, np.zeros((0, 1), dtype=np.float32), 16000)
    cases["zero samples"] = (zero, "no audio samples")
    mulaw = folder / "mulaw-8k.wav"
    subprocess.run(["sox", str(good), "-r", "8000", "-c", "1", "-e", "u-law", str(mulaw)], check=True)
    cases["8 kHz mu-law"] = (mulaw, None)
    six = folder / "six-96k.wav"
    subprocess.run(["sox", str(good), "-r", "96000", "-c", "6", str(six), "remix", "1", "2", "1",
                    "2", "1", "2"], check=True)
    cases["6-channel 96 kHz"] = (six, None)
    for ext in ("mp3", "opus", "m4a"):
        cases[ext] = (speak("compressed formats work too", folder / f"c.{ext}", 44100, 1), None)
    odd = folder / "a dir with spaces" / "überprüfung ñ 日本 $(x) 'q'.wav"
    odd.parent.mkdir(exist_ok=True)
    odd.write_bytes(speak("odd names", folder / "odd.wav").read_bytes())
    cases["spaces and non-ASCII"] = (odd, None)
    return cases


def make_long_silence(path: Path, seconds: int) -> Path:
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", str(path), "trim", "0", str(seconds)],
                   check=True)
    return path

