"""The language-ID pass on CPU with the real Whisper-base (faster-whisper): how often it names
the spoken language, how sure it is, and what it costs per audio second.

Set: espeak-ng speech in English, German, Spanish and French (asrd.speech_samples
make_language_set: clips of two sentences, each language's own voice, at several speeds),
16 kHz FLAC, one clip per segment.

Accuracy: the identifier's top language against the clip's language, overall and per language,
and at `language_id.min_p` (the share routed, and the accuracy of those routed).
Cost, CPU seconds (this process, all threads) per audio second, whole passes alternating so
that the shared machine's load hits all alike:
- `own model`: the identifier with a model of its own (another model than the engine's):
  one encoder pass and one decoder step per segment;
- `shared`: with the engine's own faster-whisper model (the default when both are
  Whisper-base): identify, then transcribe in the routed language, against transcribing in
  the known language alone; the difference is the pass's cost, since the transcription reuses
  the encoder output the detection left.

    python bench/bench_language_id.py [--speeds 130 170] [--min-p 0.5] [--rounds 1] [--record]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import report  # noqa: E402

from asrd import config  # noqa: E402
from asrd.engines.base import Segment  # noqa: E402
from asrd.engines.language_id import WhisperDetector, with_language_id  # noqa: E402
from asrd.engines.registry import build_engine  # noqa: E402
from asrd.speech_samples import SPOKEN, make_language_set  # noqa: E402


def cpu_s(fn) -> float:
    t = time.process_time()
    fn()
    return time.process_time() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--speeds", type=int, nargs="+", default=[130, 170])
    ap.add_argument("--min-p", type=float, default=0.5)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="asrd-lid-"))
    manifest = make_language_set(folder, speeds=tuple(args.speeds))
    import json

    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    segments, truth = [], []
    for r in rows:
        audio, _ = sf.read(folder / r["path"], dtype="float32")
        segments.append(Segment(audio, None, id=r["id"]))
        truth.append(r["spoken"])
    audio_s = sum(len(s.audio) for s in segments) / 16000

    cfg = config.load(None, ["run.index=x", "language_id.enabled=true",
                             f"language_id.min_p={args.min_p}", "quality.audio_language=false"])
    own = WhisperDetector.load("whisper-base", "int8", int(cfg.engine.cpus_per_engine))
    routed_engine = with_language_id(cfg.engine, cfg.quality, cfg.language_id)
    plain_engine = build_engine(cfg.engine, cfg.quality)  # no pass: the language is known
    known = [Segment(s.audio, lang, id=s.id) for s, lang in zip(segments, truth)]

    found = own.identify(segments)  # also a warm-up of each model
    routed_engine.hypotheses(segments[:1])
    plain_engine.hypotheses(known[:1])
    t_own, t_shared, t_plain = [], [], []
    for k in range(args.rounds):
        t_own.append(cpu_s(lambda: own.identify(segments)))
        t_shared.append(cpu_s(lambda: routed_engine.hypotheses(segments)))
        t_plain.append(cpu_s(lambda: plain_engine.hypotheses(known)))
        print(f"round {k + 1}: own {t_own[-1]:.1f} s, identify + transcribe {t_shared[-1]:.1f} "
              f"s, transcribe {t_plain[-1]:.1f} s", file=sys.stderr, flush=True)
    own_rate = min(t_own) / audio_s
    extra = (min(t_shared) - min(t_plain)) / audio_s

    right = [f is not None and f.language == t for f, t in zip(found, truth)]
    sure = [f is not None and f.p is not None and f.p >= args.min_p for f in found]
    per_language = ", ".join(
        f"{lang} {sum(r for r, t in zip(right, truth) if t == lang)}/{truth.count(lang)}"
        for lang in SPOKEN)
    sure_right = sum(r for r, s in zip(right, sure) if s)
    wrong = "; ".join(f"{t} as {f.language} ({f.p:.2f})" for f, t, r in zip(found, truth, right)
                      if not r and f is not None)
    mean_p = {lang: sum(f.p for f, t in zip(found, truth) if t == lang) / truth.count(lang)
              for lang in SPOKEN}
    n = len(rows)
    workload = (f"{n} espeak-ng clips ({len(SPOKEN)} languages x 4 two-sentence clips x speeds "
                f"{'/'.join(map(str, args.speeds))} wpm), {audio_s:.0f} audio s, Whisper-base "
                "int8, 1 thread")
    report("language_id", [
        ("Whisper-base language ID: right top language", f"{sum(right)}/{n} ({sum(right) / n:.0%})",
         f"{workload}; per language {per_language}; wrong: {wrong or 'none'}"),
        ("... mean probability of the top language, per language",
         ", ".join(f"{k} {v:.2f}" for k, v in mean_p.items()), workload),
        (f"... routed at min_p {args.min_p}: share of clips, and right among them",
         f"{sum(sure)}/{n} routed, {sure_right}/{sum(sure)} right" if sum(sure) else "0 routed",
         f"{workload}; the rest are transcribed in engine.language and flagged unsure_language"),
        ("... CPU s per audio s, identifier with its own model",
         f"{own_rate:.4f} ({min(t_own):.2f} CPU s for {audio_s:.0f} audio s)",
         f"{workload}; best of {args.rounds} pass(es)"),
        ("... CPU s per audio s the pass adds to the engine, sharing its model",
         f"{extra:.4f} (identify + transcribe {min(t_shared):.2f} vs transcribe "
         f"{min(t_plain):.2f} CPU s)",
         f"{workload}; the engine transcribes each clip alone, in its known language vs the "
         f"routed one (a wrong or unrouted clip's text differs); best of {args.rounds} "
         "pass(es) each, alternating"),
    ], args.record)


if __name__ == "__main__":
    main()
