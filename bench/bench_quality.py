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
Short utterances (bench/quality_sets.py says how they are made), in a second manifest whose
order is shuffled with a fixed seed, so that other-language clips share packed windows with
English ones as in a mixed corpus:
- short_en: 50 English phrases of 1-5 words (commands, everyday phrases, numbers, names), each
  said by two of four voices; the reference is kept in the column `truth`, which the pipeline
  does not read (most corpora have none), and a row's label counts as right at CER <= 10%;
- short_other: 30 German, Spanish and French phrases of 1-5 words, transcribed as English.
Every figure is also given per length bucket (words of the reference: 1-2, 3-5, 6-10, >10),
with text language ID's accuracy by word count on every labelled text (references and the
model's right transcripts), and the low_logprob floor's right-kept/wrong-dropped shares by
bucket at several values (the calibration of `min_avg_logprob_short`).
Every row goes through a real run (index, plan, Ray pipeline, shard file) and a merge with the
default preset; a row of a bad kind should be dropped, a good row kept. The engine section comes
from the command line (`key=value` overrides, e.g. `engine.kind=vllm engine.model=DIR
engine.device=cuda ...`), so the same figures can be taken on a GPU. A second run does the
same without Whisper's spoken-language detection (`quality.audio_language=false`: how vLLM runs
by default, where the detection is costly; faster-whisper by default detects the language of
segments whose label is in doubt: average log-probability below `quality.doubt_logprob`, or
a text shorter than `quality.doubt_words`).

Cost of the signals (faster-whisper, whose detection it switches), side by side in one process
on the same segments (whole passes alternating, so that the shared machine's load hits all
alike): one engine with the spoken-language detection off, as by default, and on every
segment, and the driver's per-row signal computation (asrd.quality.signals.SignalMaker.row)
over the same rows; cost = (engine time with - without) / engine time without, and signal time
/ engine time without.

    python bench/bench_quality.py --record [--sets short,sentences] [--no-cost] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import math
import random
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
from asrd.quality import reference, text  # noqa: E402
from asrd.quality.flags import Thresholds, row_flags  # noqa: E402
from asrd.quality.langid import text_language_id  # noqa: E402
from asrd.quality.presets import PresetFilter, get_preset  # noqa: E402
from asrd.quality.signals import EngineSignals, SignalMaker, SignalSettings  # noqa: E402
from asrd.run_config import open_run  # noqa: E402
from asrd.runtime.task import run_task  # noqa: E402
from asrd.speech_samples import SENTENCES, non_speech  # noqa: E402
from bench.quality_sets import (OTHER_VOICES, SHORT_ENGLISH, SHORT_OTHER,  # noqa: E402
                                SHORT_VOICES)
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
BUCKETS = (("1-2", 2), ("3-5", 5), ("6-10", 10), (">10", 10**9))  # words of the reference
RIGHT_CER = 0.10  # a label at most this far from its reference (CER) is right
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


def build_short_set(folder: Path) -> list[dict]:
    """The short-utterance rows (bench/quality_sets.py), shuffled with a fixed seed."""
    rows: list[dict] = []

    def add(kind: str, phrase: str, voice: str, speed: int) -> None:
        path = folder / f"{kind}-{len(rows):03d}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), phrase],
                       check=True, capture_output=True)
        rows.append({"audio_filepath": path.name, "language": "en", "kind": kind,
                     "truth": phrase})

    for i, phrase in enumerate(SHORT_ENGLISH):
        for k in range(2):
            add("short_en", phrase, *SHORT_VOICES[(i + k) % len(SHORT_VOICES)])
    for lang, phrase in SHORT_OTHER:
        add("short_other", phrase, OTHER_VOICES[lang], 150)
    random.Random(0).shuffle(rows)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def real_run(work: Path, set_name: str, name: str, overrides: list[str],
             merge_overrides: list[str] = ()) -> tuple[list[dict], set[str]]:
    """A real run over one labelled set and a merge with the default preset: (the shard's rows,
    the ids the merge kept). `merge_overrides`: quality thresholds set at merge time only."""
    index = work / f"{set_name}.parquet"
    if not index.is_file():
        build_index(work / set_name / "manifest.jsonl", index)
    base = [f"run.index={index}", f"run.dir={work / name}", "run.num_shards=1", *overrides]
    cfg = config_mod.load(None, base)
    rd, _ = make_plan(cfg)
    run_task(rd.path, None, overrides)
    run = open_run(None, base + list(merge_overrides))
    merge(run.cfg, track=False, threshold_edits=run.threshold_edits)
    import pyarrow.parquet as pq

    shard = pq.read_table(rd.shard_file(0)).to_pylist()
    kept = set(pq.ParquetDataset(rd.merged_files()).read().column("id").to_pylist())
    return shard, kept


def drop_shares(shard: list[dict], kept: set[str]) -> tuple[dict, dict, dict]:
    """Per kind (rows, dropped), the merged flags of each kind and rows dropped per flag."""
    per_kind: dict[str, list[int]] = {}
    flags: dict[str, Counter] = {}
    by_flag: Counter = Counter()
    thresholds = Thresholds()
    for r in shard:
        kind = r["kind"]
        n = per_kind.setdefault(kind, [0, 0])
        n[0] += 1
        n[1] += r["id"] not in kept
        now = merged_flags(r, thresholds)
        flags.setdefault(kind, Counter()).update(now or ["(error)" if r["error"] else "-"])
        by_flag.update(now or [])
    return per_kind, flags, dict(by_flag)


def merged_flags(r: dict, t: Thresholds) -> list[str]:
    """A shard row's flags as a merge at thresholds `t` computes them."""
    return row_flags(r, t, r.get("language") or "en") if r["flags"] is not None else []


def bucket(n_words: int) -> str:
    return next(name for name, top in BUCKETS if n_words <= top)


def label_right(r: dict) -> bool:
    """A short English row's label is right: CER <= 10% against its reference."""
    if r["error"] is not None:
        return False
    scores = reference.score(r["text"] or "", r["truth"], "en")
    return scores is not None and scores.cer <= RIGHT_CER


def short_table(shard: list[dict], kept: set[str]) -> dict[str, dict[str, list[int]]]:
    """Per bucket and kind (short_en right, short_en wrong, short_other): [rows, kept]."""
    table: dict[str, dict[str, list[int]]] = {}
    for r in shard:
        words = len(text.words(r["truth"]))
        kind = r["kind"] if r["kind"] == "short_other" else (
            "short_en right" if label_right(r) else "short_en wrong")
        for b in (bucket(words), "all"):
            cell = table.setdefault(b, {}).setdefault(kind, [0, 0])
            cell[0] += 1
            cell[1] += r["id"] in kept
    return table


def langid_accuracy(texts: list[tuple[str, str]], languages: list[str]) -> dict[str, list[int]]:
    """Text language ID (as the pipeline runs it) on (text, true language), by word count:
    word-count bucket -> [texts, right]."""
    lid = text_language_id(tuple(languages))
    out: dict[str, list[int]] = {}
    for t, lang in texts:
        n = len(text.words(t))
        if n == 0:
            continue
        guess = lid.guess(t, lang)
        key = str(n) if n <= 6 else ("7-10" if n <= 10 else ">10")
        cell = out.setdefault(key, [0, 0])
        cell[0] += 1
        cell[1] += guess is not None and guess.language == lang
    return dict(sorted(out.items(), key=lambda kv: (len(kv[0]) > 1, kv[0])))


def logprob_calibration(rows: list[tuple[dict, bool]], floors: list[float]
                        ) -> dict[str, dict[float, tuple[int, int, int, int]]]:
    """For each word bucket and floor: (right rows, right kept, wrong rows, wrong dropped) by
    the low_logprob rule alone (the row's avg log-probability below the floor)."""
    out: dict[str, dict[float, tuple[int, int, int, int]]] = {}
    for floor in floors:
        cells: dict[str, list[int]] = {}
        for r, right in rows:
            if r["error"] is not None or not r["num_words"] or r["avg_logprob"] is None:
                continue
            c = cells.setdefault(bucket(r["num_words"]), [0, 0, 0, 0])
            low = r["avg_logprob"] < floor
            if right:
                c[0] += 1
                c[1] += not low
            else:
                c[2] += 1
                c[3] += low
        for b, c in cells.items():
            out.setdefault(b, {})[floor] = tuple(c)
    return out


def signal_cost(work: Path, rows: list[dict], rounds: int, overrides: list[str]
                ) -> tuple[dict, float, int, int]:
    """(engine s per detection mode, driver signal s, segments, segments detected by default).
    Modes: none, the default (segments in doubt), every segment."""
    base = config_mod.load(None, ["run.index=unused", *overrides])
    engine = build_engine(base.engine, base.quality)  # one model: detection switched
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


def share(part: int, whole: int) -> str:
    return f"{part}/{whole} ({part / whole:.1%})" if whole else "-"


def sentence_figures(work: Path, rows: list[dict], overrides: list[str], engine: str,
                     cost_rounds: int) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """The sentence-length set's figures, and its (text, language) pairs for language ID."""
    shard, kept = real_run(work, "set", "run", overrides)
    per_kind, flags, by_flag = drop_shares(shard, kept)
    show(per_kind, flags, by_flag)
    bad_share, good_share = shares(per_kind)
    n_bad = sum(per_kind[k][0] for k in BAD_KINDS if k in per_kind)
    workload = f"{len(rows)} rows ({n_bad} bad, {len(rows) - n_bad} good), " \
               f"espeak-ng, {engine}, default preset"
    figures = [("bad rows dropped, share", f"{bad_share:.1%}", workload),
               ("good rows kept, share", f"{good_share:.1%}", workload)]
    figures += [(f"{kind}: {'kept' if kind.startswith('good') else 'dropped'}",
                 f"{n - d if kind.startswith('good') else d}/{n}", workload)
                for kind, (n, d) in per_kind.items()]
    # the same set without Whisper's spoken-language detection (as vLLM runs by default)
    shard_u, kept_u = real_run(work, "set", "run-no-detect",
                               [*overrides, "quality.audio_language=false"])
    undetected, flags_u, by_flag_u = drop_shares(shard_u, kept_u)
    show(undetected, flags_u, by_flag_u)
    bad_share_u, good_share_u = shares(undetected)
    without = workload + ", quality.audio_language=false"
    n, d = undetected["other_language"]
    figures += [("without spoken-language detection: bad rows dropped, share",
                 f"{bad_share_u:.1%}", without),
                ("without spoken-language detection: good rows kept, share",
                 f"{good_share_u:.1%}", without),
                ("without spoken-language detection: other_language dropped", f"{d}/{n}",
                 without)]
    texts = [(r["text"], "en") for r in shard if r["kind"] == "good" and r["text"]]
    texts += [(sentence, lang) for lang, sentences in FOREIGN.items() for sentence in sentences]
    texts += [(sentence, "en") for sentence in SENTENCES]
    if cost_rounds and config_mod.load(None, ["run.index=x", *overrides]).engine.kind \
            == "faster_whisper":  # the comparison switches faster-whisper's detection
        figures += cost_figures(work, rows, cost_rounds, overrides)
    return figures, texts


def cost_figures(work: Path, rows: list[dict], rounds: int, overrides: list[str]
                 ) -> list[tuple[str, str, str]]:
    took, sig, n_segs, n_detected = signal_cost(work, rows, rounds, overrides)
    off = took["none"]
    print(f"engine s per detection mode {took}; driver signals {sig:.2f} s")
    cost_load = f"{n_segs} segments x {rounds} rounds, passes alternating on/off, one engine"
    return [("signals cost: spoken-language detection as by default (segments below "
             "quality.doubt_logprob or under quality.doubt_words), share of engine time",
             f"{(took['default'] - off) / off:.1%}",
             f"{cost_load}; {n_detected} of {n_segs} segments detected"),
            ("signals cost: spoken-language detection of every segment "
             "(quality.audio_language=true), share of engine time",
             f"{(took['every'] - off) / off:.1%}", cost_load),
            ("signals cost: per-row signals (driver), share of engine time",
             f"{sig / off:.2%}", cost_load),
            ("signals cost: per-row signals, ms per row",
             f"{1000 * sig / max(1, n_segs * rounds):.2f}", cost_load)]


def short_figures(work: Path, overrides: list[str], engine: str
                  ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]], list]:
    """The short set's figures per bucket, its texts for language ID, and its rows labelled
    right/wrong for the log-probability calibration."""
    shard, kept = real_run(work, "short", "run-short", overrides)
    per_kind, flags, by_flag = drop_shares(shard, kept)
    show(per_kind, flags, by_flag)
    table = short_table(shard, kept)
    workload = (f"{len(SHORT_ENGLISH) * 2} short English rows (1-5 words, 4 voices, right at "
                f"CER <= 10%, no reference given to the run) and {len(SHORT_OTHER)} short "
                f"de/es/fr rows, shuffled, packed as by default; {engine}, default preset")
    figures = []
    for b, cells in table.items():
        n, k = cells.get("short_en right", [0, 0])
        figures.append((f"short, {b} words: English rows whose label is right, kept",
                        share(k, n), workload))
        n, k = cells.get("short_en wrong", [0, 0])
        figures.append((f"short, {b} words: English rows whose label is wrong, dropped",
                        share(n - k, n), workload))
        n, k = cells.get("short_other", [0, 0])
        figures.append((f"short, {b} words: other-language rows dropped", share(n - k, n),
                        workload))
    packed = [r for r in shard if r["pack_window"] is not None]
    windows = len({r["pack_window"] for r in packed})
    in_doubt = [r for r in packed if r["audio_language"] is not None]
    figures.append(("short: packed clips in doubt, detected on their own audio (an encoder pass "
                    "each), of packed clips",
                    f"{len(in_doubt)}/{len(packed)} in {windows} windows (English "
                    f"{sum(r['kind'] == 'short_en' for r in in_doubt)}/"
                    f"{sum(r['kind'] == 'short_en' for r in packed)})", workload))
    figures.append(("short: rows dropped by flag (a row counts under each)",
                    ", ".join(f"{f}={c}" for f, c in sorted(by_flag.items(),
                                                             key=lambda kv: -kv[1])), workload))
    texts = [(r["truth"], "en") for r in shard if r["kind"] == "short_en"]
    texts += [(t, lang) for lang, t in SHORT_OTHER]
    texts += [(r["text"], "en") for r in shard if r["kind"] == "short_en" and label_right(r)]
    labelled = [(r, r["kind"] == "short_en" and label_right(r)) for r in shard]
    return figures, texts, labelled


def flags_rate(n_rows: int) -> list[tuple[str, str, str]]:
    """What computing every row's flags again costs a merge: PresetFilter over shard-like record
    batches (8192 rows, every signal column set)."""
    import pyarrow as pa

    row = {"id": "x", "language": "en", "avg_logprob": -0.4, "no_speech_prob": 0.1,
           "audio_language": "en", "audio_language_p": 0.8, "audio_expected_p": 0.8,
           "text_language": "en", "text_language_p": 0.9, "text_expected_p": 0.9,
           "num_words": 4, "compression_ratio": 1.2, "ngram_repeats": 1,
           "unique_word_share": 1.0, "longest_word": 6, "chars_per_s": 12.0,
           "words_per_s": 2.0, "hallucination": None, "wer": None, "cer": None, "flags": []}
    batch = pa.Table.from_pylist([row] * 8192)
    f = PresetFilter(get_preset("default"), Thresholds(), "en")
    t = time.perf_counter()
    for _ in range(max(1, n_rows // 8192)):
        f.apply(batch)
    took = time.perf_counter() - t
    rows = max(1, n_rows // 8192) * 8192
    return [("merge: flags computed again from the stored signals, rows/s",
             f"{rows / took:,.0f}", f"{rows} rows in 8192-row batches, default preset")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("overrides", nargs="*", metavar="key=value",
                    help="config overrides of every run (e.g. the engine section)")
    ap.add_argument("--sets", default="short,sentences",
                    help="what to measure: short, sentences (labelled sets), flags (merge cost)")
    ap.add_argument("--rounds", type=int, default=2, help="cost: passes over the segments")
    ap.add_argument("--no-cost", action="store_true", help="skip the cost comparison")
    ap.add_argument("--workdir", help="keep the sets and the runs here (default: a temp folder)")
    ap.add_argument("--record", action="store_true", help="append the figures to RESULTS.md")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="asrd-quality-"))
    sets = args.sets.split(",")
    cfg = config_mod.load(None, ["run.index=unused", *args.overrides])
    engine = f"{cfg.engine.kind} {cfg.engine.model} {cfg.engine.compute_type}"
    figures: list[tuple[str, str, str]] = []
    texts: list[tuple[str, str]] = []
    labelled: list[tuple[dict, bool]] = []
    if "sentences" in sets:
        (work / "set").mkdir(parents=True, exist_ok=True)
        rows = build_set(work / "set")
        got, more = sentence_figures(work, rows, args.overrides, engine,
                                     0 if args.no_cost else args.rounds)
        figures += got
        texts += more
    if "short" in sets:
        (work / "short").mkdir(parents=True, exist_ok=True)
        if not (work / "short" / "manifest.jsonl").is_file():
            build_short_set(work / "short")
        got, more, labelled = short_figures(work, args.overrides, engine)
        figures += got
        texts += more
    lid_load = (f"{len(texts)} labelled texts (references, foreign phrases, right transcripts) "
                f"by word count; candidates {list(cfg.quality.languages)}")
    if texts:
        figures += [(f"text language ID accuracy, {n} words", share(right, total), lid_load)
                    for n, (total, right) in langid_accuracy(
                        texts, list(cfg.quality.languages)).items()]
    if "flags" in sets:
        figures += flags_rate(200_000)
    if labelled:
        calib = logprob_calibration(labelled, [-0.8, -1.0, -1.2, -1.5, -2.0])
        for b, by_floor in calib.items():
            figures.append((
                f"low_logprob alone, short set, {b} words of text: right kept / wrong dropped "
                "at floor " + ", ".join(f"{f:g}" for f in by_floor),
                "; ".join(f"{rk}/{r} / {wd}/{w}" for r, rk, w, wd in by_floor.values()),
                "short set rows; wrong = short English CER > 10% or other-language"))
    report("quality", figures, args.record)


if __name__ == "__main__":
    main()
