"""`asrd export` throughput and peak memory on a large merged run, per format and audio mode.

A merged run of N rows (default 100k; `--flac-rows`, default 10k, for the 16 kHz FLAC mode, whose
cost is decoding and encoding every clip) is made from a few espeak recordings in mixed formats
(WAV, FLAC, MP3, OGG, M4A, Opus at 8-48 kHz, mono and stereo), each row pointing at one of them
under its own id, with two segments and the transcript. Each export runs in a child process:
rows/s over the whole export, and the child's peak RSS; the same export of N/10 rows beside it
shows whether memory stays flat as the row count grows.

    python bench/bench_export.py --rows 100000 --record
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asrd import config as config_mod  # noqa: E402
from asrd.audio import probe  # noqa: E402
from asrd.merge import content_id  # noqa: E402
from asrd.schema import OUTPUT_SCHEMA  # noqa: E402
from asrd.speech_samples import make_corpus  # noqa: E402
from bench.results import report  # noqa: E402

RUNS = [("webdataset", "original"), ("hf", "original"), ("lhotse", "original"), ("hf", "flac16k")]


def corpus_clips(folder: Path, n: int) -> list[tuple[str, float, str]]:
    """`n` espeak recordings in `folder`: (path, seconds, reference) each."""
    manifest = make_corpus(folder, n=n)
    clips = []
    for line in manifest.read_text().splitlines():
        r = json.loads(line)
        path = str(folder / r["path"])
        clips.append((path, probe(path).duration_s, r["reference"]))
    return clips


def make_merged(run: Path, rows: int, clips: list[tuple[str, float, str]]) -> None:
    """RUN_DIR/merged with `rows` rows in files of 10k rows and summary.json's merge id (as
    `asrd merge` leaves them)."""
    merged = run / "merged"
    merged.mkdir(parents=True)
    schema = pa.schema(list(OUTPUT_SCHEMA) + [pa.field("path", pa.string()),
                                              pa.field("reference", pa.string())])
    per_file = 10000
    for f, lo in enumerate(range(0, rows, per_file)):
        batch = []
        for r in range(lo, min(rows, lo + per_file)):
            path, dur, text = clips[r % len(clips)]
            batch.append({"id": f"row{r:07d}", "row": r, "text": text, "duration_s": dur,
                          "speech_s": dur, "model": "whisper-base", "engine": "faster_whisper",
                          "segments": [{"start": 0.0, "end": dur / 2, "text": text[:len(text) // 2]},
                                       {"start": dur / 2, "end": dur, "text": text[len(text) // 2:]}],
                          "path": path, "reference": text})
        pq.write_table(pa.Table.from_pylist(batch, schema=schema), merged / f"part-{f:05d}.parquet")
    files = sorted(p.name for p in merged.glob("part-*.parquet"))
    (merged / "summary.json").write_text(json.dumps({"files": files,
                                                     "merge_id": content_id(merged, files)}))


def child(run: str, out: str, fmt: str, audio: str) -> None:
    from asrd.export import export

    cfg = config_mod.load(None, [f"run.dir={run}", f"export.format={fmt}", f"export.audio={audio}",
                                 "export.shard_mb=256"])
    t0 = time.monotonic()
    s = export(cfg, out)
    wall = time.monotonic() - t0
    print(json.dumps({"items": s.items, "wall_s": wall,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(run: Path, out: Path, fmt: str, audio: str) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    proc = subprocess.run([sys.executable, __file__, "--child", str(run), str(out), fmt, audio],
                          capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out, ignore_errors=True)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100000)
    ap.add_argument("--flac-rows", type=int, default=10000, help="rows for export.audio=flac16k")
    ap.add_argument("--recordings", type=int, default=12)
    ap.add_argument("--only", default=None, help="one format,audio pair, e.g. hf,flac16k")
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    clips = corpus_clips(work / "corpus", args.recordings)
    runs = [tuple(args.only.split(","))] if args.only else RUNS
    figures = []
    for fmt, audio in runs:
        large = args.flac_rows if audio == "flac16k" else args.rows
        small = max(1, large // 10)
        for n in (small, large):
            if not (work / f"run-{n}").is_dir():
                make_merged(work / f"run-{n}", n, clips)
        a = measure(work / f"run-{small}", work / "out", fmt, audio)
        b = measure(work / f"run-{large}", work / "out", fmt, audio)
        assert b["items"] == large, b
        print(fmt, audio, a, b, flush=True)
        figures.append((f"{fmt}, {audio}: rows/s; peak RSS MB at {small:,} / {large:,} rows",
                        f"{b['items'] / b['wall_s']:,.0f} rows/s; {a['peak_rss_mb']:.0f} / "
                        f"{b['peak_rss_mb']:.0f} MB; {b['bytes'] / 2**30:.2f} GiB written",
                        f"{large:,} merged rows over {args.recordings} espeak recordings in mixed "
                        "formats (8-48 kHz, 2-4 s), 4 audio threads, 256 MB shards"))
    report("export", figures, args.record)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
