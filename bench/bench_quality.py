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
default preset; a row of a bad kind should be dropped, a good row kept.

Cost of the signals, side by side in one process on the same segments (alternating, so that
the shared machine's load hits both alike): the engine with the spoken-language detection
(`quality.audio_language`) and without, and the driver's per-row signal computation
(asrd.quality.signals.SignalMaker.row) over the same rows; cost = (engine time with - without
+ signal time) / engine time without.

    python bench/bench_quality.py --record
"""

from __future__ import annotations

import argparse
import json
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


def drop_shares(work: Path, rows: list[dict], overrides: list[str]) -> tuple[dict, dict, dict]:
    """A real run and a default-preset merge: per kind (rows, dropped) and flags of each kind."""
    build_index(work / "set" / "manifest.jsonl", work / "index.parquet")
    cfg = config_mod.load(None, [f"run.index={work / 'index.parquet'}", f"run.dir={work / 'run'}",
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


def signal_cost(work: Path, rows: list[dict], rounds: int) -> tuple[float, float, float, int]:
    """(engine s without the spoken-language detection, with it, driver signal s, segments)."""
    base = config_mod.load(None, ["run.index=unused"])
    plain = build_engine(base.engine, None, config_mod.load(
        None, ["run.index=unused", "quality.audio_language=false"]).quality)
    full = build_engine(base.engine, None, base.quality)
    vad = VadSettings()
    segs = []
    for r in rows:
        audio = decode(str(work / "set" / r["audio_filepath"]), SR)
        for a, b in segment(audio, SR, base.audio.max_segment_s, vad).spans:
            segs.append(Segment(audio[a:b], "en"))
    maker = SignalMaker(SignalSettings.of(base.quality), "en")
    off = on = sig = 0.0
    texts = []
    for k in range(rounds):
        for seg in segs:
            first, second = (plain, full) if k % 2 == 0 else (full, plain)
            for engine in (first, second):
                t = time.perf_counter()
                (h,) = engine.hypotheses([seg])
                took = time.perf_counter() - t
                if engine is plain:
                    off += took
                else:
                    on += took
                    texts.append((h, len(seg.audio) / SR))
    t = time.perf_counter()
    for h, secs in texts:
        maker.row(h.text, secs, EngineSignals(h.avg_logprob, h.no_speech_prob, h.language,
                                              h.language_p), SENTENCES[0], "en")
    sig = time.perf_counter() - t
    return off, on, sig, len(segs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="cost: passes over the segments")
    ap.add_argument("--workdir", help="keep the set and the run here (default: a temp folder)")
    ap.add_argument("--record", action="store_true", help="append the figures to RESULTS.md")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="asrd-quality-"))
    (work / "set").mkdir(parents=True, exist_ok=True)
    rows = build_set(work / "set")
    per_kind, flags, by_flag = drop_shares(work, rows, [])
    for kind, (n, dropped) in per_kind.items():
        print(f"{kind:<18} {n:3d} rows, dropped {dropped:3d}   flags: {dict(flags[kind])}")
    print("dropped by flag:", by_flag)
    bad = [per_kind[k] for k in BAD_KINDS if k in per_kind]
    good = [per_kind[k] for k in ("good", "good_no_reference")]
    bad_share = sum(d for _, d in bad) / sum(n for n, _ in bad)
    good_share = 1 - sum(d for _, d in good) / sum(n for n, _ in good)
    off, on, sig, n_segs = signal_cost(work, rows, args.rounds)
    cost_engine = (on - off) / off
    cost_rows = sig / off
    print(f"engine s: without detection {off:.1f}, with {on:.1f}; driver signals {sig:.2f} s")
    workload = f"{len(rows)} rows ({sum(n for n, _ in bad)} bad, {sum(n for n, _ in good)} good), " \
               "espeak-ng, Whisper-base int8, default preset"
    figures = [("bad rows dropped, share", f"{bad_share:.1%}", workload),
               ("good rows kept, share", f"{good_share:.1%}", workload)]
    figures += [(f"{kind}: {'kept' if kind.startswith('good') else 'dropped'}",
                 f"{n - d if kind.startswith('good') else d}/{n}", workload)
                for kind, (n, d) in per_kind.items()]
    cost_load = f"{n_segs} segments x {args.rounds} rounds, alternating on/off, 1 engine thread"
    figures += [("signals cost: spoken-language detection, share of engine time",
                 f"{cost_engine:.1%}", cost_load),
                ("signals cost: per-row signals (driver), share of engine time",
                 f"{cost_rows:.2%}", cost_load),
                ("signals cost: per-row signals, ms per row",
                 f"{1000 * sig / max(1, n_segs * args.rounds):.2f}", cost_load)]
    report("quality", figures, args.record)


if __name__ == "__main__":
    main()
