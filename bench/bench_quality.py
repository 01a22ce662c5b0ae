"""Label quality on CPU with the real Whisper-base (faster-whisper): which rows the default
preset drops, per kind, and what the signals cost.

Labelled test set (made here with espeak-ng, nothing downloaded), in one NeMo-style manifest
whose `language` is "en" for every row (the configured language):
- good: English sentences in several voices and speeds, with their right reference (`text`);
- good_no_reference: more of them without a reference (only the model's and the text's
  signals can judge them);
- silence, noise, tone, sweep (10 s each): with VAD they become rows without words;
- other_language: German, Spanish and French sentences (espeak's voices), transcribed as
  English as configured;
- cut_off: English sentences cut mid-word at 55% of their length, with the full reference;
- loop: one sentence said again and again for a minute, no reference;
- wrong_reference: good speech whose reference is another sentence.
Every row goes through a real run (index, plan, Ray pipeline, shard file) and a merge with the
default preset; a row of a bad kind should be dropped, a good row kept. A second run does the
same without Whisper's spoken-language detection (`quality.audio_language=false`: how vLLM runs
by default, where the detection is costly; faster-whisper by default detects the language of
segments whose label is in doubt: average log-probability below `quality.doubt_logprob`).

Cost of the signals, side by side in one process on the same segments (whole passes
alternating, so that the shared machine's load hits all alike): one engine with the
spoken-language detection off, as by default, and on every segment, and the driver's per-row
signal computation (asrd.quality.signals.SignalMaker.row) over the same rows; cost = (engine
time with - without) / engine time without, and signal time / engine time without.

    python bench/bench_quality.py --record
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asrd import config as config_mod  # noqa: E402
from asrd.audio import VadSettings, decode, segment  # noqa: E402
from asrd.engines import Segment, build_engine  # noqa: E402
from asrd.index import build_index  # noqa: E402
from asrd.merge import merge  # noqa: E402
from asrd.plan import make_plan  # noqa: E402
from asrd.quality.signals import EngineSignals, SignalMaker, SignalSettings  # noqa: E402
from asrd.runtime.task import run_task  # noqa: E402
from asrd.testing.samples import SENTENCES, non_speech  # noqa: E402
from bench.results import report  # noqa: E402

SR = 16000
VOICES = [("en-us", 150), ("en", 130), ("en-gb-x-rp", 170), ("en-us+m3", 140), ("en+f2", 160)]
FOREIGN = {
    "de": ["das wetter ist heute sonnig mit einer leichten brise aus dem westen",
           "die große stadt hat viele alte häuser und schöne parks",
           "bitte bringen sie mir morgen die neuen bücher aus der bibliothek"],
    "es": ["el tiempo hoy es soleado con una brisa ligera del oeste",
           "la gran ciudad tiene muchas casas antiguas y parques bonitos",
           "por favor tráeme mañana los libros nuevos de la biblioteca"],
    "fr": ["le temps est ensoleillé aujourd'hui avec une légère brise de l'ouest",
           "la grande ville a beaucoup de vieilles maisons et de beaux parcs",
           "apportez-moi demain les nouveaux livres de la bibliothèque s'il vous plaît"],
}
BAD_KINDS = ("silence", "noise", "tone", "sweep", "other_language", "cut_off", "loop",
             "wrong_reference")


def espeak(text: str, wav: Path, voice: str, speed: int) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(wav), text],
                   check=True, capture_output=True)
    return decode(str(wav), SR)


def build_set(folder: Path) -> list[dict]:
    """The labelled rows (audio files under `folder`), each with its `kind`."""
    rows: list[dict] = []

    def add(kind: str, audio: np.ndarray, reference: str | None) -> None:
        path = folder / f"{kind}-{len(rows):03d}.wav"
        sf.write(path, audio, SR)
        row = {"audio_filepath": path.name, "language": "en", "kind": kind}
        if reference is not None:
            row["text"] = reference
        rows.append(row)

    tmp = folder / "espeak.wav"
    for i, sentence in enumerate(SENTENCES * 2):  # 16 good rows, every voice and speed
        voice, speed = VOICES[i % len(VOICES)]
        add("good", espeak(sentence, tmp, voice, speed + 10 * (i // len(SENTENCES))), sentence)
    for i, sentence in enumerate(SENTENCES):
        voice, speed = VOICES[(i + 2) % len(VOICES)]
        add("good_no_reference", espeak(sentence, tmp, voice, speed), None)
    for kind in ("silence", "noise", "tone", "sweep"):
        for seed in range(2):
            add(kind, non_speech(kind, 10.0, seed=seed), "")
    for lang, sentences in FOREIGN.items():
        for sentence in sentences:
            add("other_language", espeak(sentence, tmp, lang, 150), None)
    for i, sentence in enumerate(SENTENCES[:4]):
        x = espeak(sentence, tmp, VOICES[i][0], VOICES[i][1])
        add("cut_off", x[: int(0.55 * len(x))], sentence)
    for i, sentence in enumerate(SENTENCES[4:6]):
        x = espeak(sentence, tmp, VOICES[i][0], VOICES[i][1])
        gap = np.zeros(int(0.3 * SR), np.float32)
        reps = int(np.ceil(60 * SR / (len(x) + len(gap))))
        add("loop", np.concatenate([np.concatenate([x, gap]) for _ in range(reps)])[: 60 * SR],
            None)
    for i, sentence in enumerate(SENTENCES[:4]):
        x = espeak(sentence, tmp, VOICES[i + 1][0], VOICES[i + 1][1])
        add("wrong_reference", x, SENTENCES[(i + 3) % len(SENTENCES)])
    tmp.unlink()
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def drop_shares(work: Path, name: str, overrides: list[str]) -> tuple[dict, dict, dict]:
    """A real run and a default-preset merge: per kind (rows, dropped) and flags of each kind."""
    if not (work / "index.parquet").is_file():
        build_index(work / "set" / "manifest.jsonl", work / "index.parquet")
    cfg = config_mod.load(None, [f"run.index={work / 'index.parquet'}", f"run.dir={work / name}",
                                 "run.num_shards=1", *overrides])
    rd, _ = make_plan(cfg)
    run_task(rd.path, None, overrides)
    summary = merge(cfg, track=False)
    import pyarrow.parquet as pq

    shard = pq.read_table(rd.shard_file(0)).to_pylist()
    kept = set(pq.ParquetDataset(rd.merged_files()).read().column("id").to_pylist())
    per_kind: dict[str, list[int]] = {}
    flags: dict[str, Counter] = {}
    for r in shard:
        kind = r["kind"]
        n = per_kind.setdefault(kind, [0, 0])
        n[0] += 1
        n[1] += r["id"] not in kept
        flags.setdefault(kind, Counter()).update(r["flags"] or ["(error)" if r["error"] else "-"])
    return per_kind, flags, summary.dropped_by_flag


def signal_cost(work: Path, rows: list[dict], rounds: int) -> tuple[dict, float, int, int]:
    """(engine s per detection mode, driver signal s, segments, segments detected by default).
    Modes: none, the default (segments in doubt), every segment."""
    base = config_mod.load(None, ["run.index=unused"])
    engine = build_engine(base.engine, None, base.quality)  # one model: detection switched
    modes = {"none": None, "default": float(base.quality.doubt_logprob), "every": math.inf}
    vad = VadSettings()
    segs = []
    for r in rows:
        audio = decode(str(work / "set" / r["audio_filepath"]), SR)
        for a, b in segment(audio, SR, base.audio.max_segment_s, vad).spans:
            segs.append(Segment(audio[a:b], "en"))
    maker = SignalMaker(SignalSettings.of(base.quality), "en")
    took = dict.fromkeys(modes, 0.0)
    texts, detected = [], 0
    for k in range(rounds):  # whole passes, order turned each round: no segment twice in a row
        for mode in (list(modes) if k % 2 == 0 else list(modes)[::-1]):
            engine.detect_below = modes[mode]
            for seg in segs:
                t = time.perf_counter()
                (h,) = engine.hypotheses([seg])
                took[mode] += time.perf_counter() - t
                if mode == "default":
                    texts.append((h, len(seg.audio) / SR))
                    detected += h.language is not None
    t = time.perf_counter()
    for h, secs in texts:
        maker.row(h.text, secs, EngineSignals.of(h), SENTENCES[0], "en")
    sig = time.perf_counter() - t
    return took, sig, len(segs), detected // max(1, rounds)


def show(per_kind: dict, flags: dict, by_flag: dict) -> None:
    for kind, (n, dropped) in per_kind.items():
        print(f"{kind:<18} {n:3d} rows, dropped {dropped:3d}   flags: {dict(flags[kind])}")
    print("dropped by flag:", by_flag)


def shares(per_kind: dict) -> tuple[float, float]:
    """(share of bad rows dropped, share of good rows kept)."""
    bad = [per_kind[k] for k in BAD_KINDS if k in per_kind]
    good = [per_kind[k] for k in ("good", "good_no_reference")]
    return (sum(d for _, d in bad) / sum(n for n, _ in bad),
            1 - sum(d for _, d in good) / sum(n for n, _ in good))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="cost: passes over the segments")
    ap.add_argument("--workdir", help="keep the set and the run here (default: a temp folder)")
    ap.add_argument("--record", action="store_true", help="append the figures to RESULTS.md")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="asrd-quality-"))
    (work / "set").mkdir(parents=True, exist_ok=True)
    rows = build_set(work / "set")
    per_kind, flags, by_flag = drop_shares(work, "run", [])
    show(per_kind, flags, by_flag)
    bad_share, good_share = shares(per_kind)
    # the same set without Whisper's spoken-language detection (as vLLM runs by default)
    undetected, flags_u, by_flag_u = drop_shares(work, "run-no-detect",
                                                 ["quality.audio_language=false"])
    show(undetected, flags_u, by_flag_u)
    bad_share_u, good_share_u = shares(undetected)
    took, sig, n_segs, n_detected = signal_cost(work, rows, args.rounds)
    off = took["none"]
    cost_default = (took["default"] - off) / off
    cost_every = (took["every"] - off) / off
    cost_rows = sig / off
    print(f"engine s per detection mode {took}; driver signals {sig:.2f} s")
    n_bad = sum(per_kind[k][0] for k in BAD_KINDS if k in per_kind)
    workload = f"{len(rows)} rows ({n_bad} bad, {len(rows) - n_bad} good), " \
               "espeak-ng, Whisper-base int8, default preset"
    figures = [("bad rows dropped, share", f"{bad_share:.1%}", workload),
               ("good rows kept, share", f"{good_share:.1%}", workload)]
    figures += [(f"{kind}: {'kept' if kind.startswith('good') else 'dropped'}",
                 f"{n - d if kind.startswith('good') else d}/{n}", workload)
                for kind, (n, d) in per_kind.items()]
    without = workload + ", quality.audio_language=false"
    n, d = undetected["other_language"]
    figures += [("without spoken-language detection: bad rows dropped, share",
                 f"{bad_share_u:.1%}", without),
                ("without spoken-language detection: good rows kept, share",
                 f"{good_share_u:.1%}", without),
                ("without spoken-language detection: other_language dropped", f"{d}/{n}",
                 without)]
    cost_load = f"{n_segs} segments x {args.rounds} rounds, passes alternating on/off, one engine"
    figures += [("signals cost: spoken-language detection as by default (segments below "
                 "quality.doubt_logprob), share of engine time", f"{cost_default:.1%}",
                 f"{cost_load}; {n_detected} of {n_segs} segments detected"),
                ("signals cost: spoken-language detection of every segment "
                 "(quality.audio_language=true), share of engine time", f"{cost_every:.1%}",
                 cost_load),
                ("signals cost: per-row signals (driver), share of engine time",
                 f"{cost_rows:.2%}", cost_load),
                ("signals cost: per-row signals, ms per row",
                 f"{1000 * sig / max(1, n_segs * args.rounds):.2f}", cost_load)]
    report("quality", figures, args.record)


if __name__ == "__main__":
    main()
