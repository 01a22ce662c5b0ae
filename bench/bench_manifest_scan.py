"""The cost of reading a manifest twice: `asrd index` scans a JSONL manifest once for its columns
(so that a column only later rows have is kept) before probing every file. Measures, in one run,
the scan alone and the whole index of the same manifest, and the scan's share of it.
Usage: python bench/bench_manifest_scan.py [--rows 20000] [--record]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asrd.index import build_index, open_source  # noqa: E402
from bench.results import report  # noqa: E402


def make_manifest(root: Path, rows: int) -> Path:
    """`rows` entries over 100 real one-second files, with a reference text and, in every
    tenth row only, a speaker (the optional column the scan is for)."""
    for i in range(100):
        sf.write(root / f"u{i:03d}.wav", np.zeros(16000, np.float32), 16000)
    manifest = root / "m.jsonl"
    with manifest.open("w") as f:
        for i in range(rows):
            row = {"id": f"r{i}", "path": f"u{i % 100:03d}.wav",
                   "reference": "a reference text of a typical length for one utterance"}
            if i % 10 == 9:
                row["speaker"] = f"s{i % 37}"
            f.write(json.dumps(row) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="asrd-bench-scan-"))
    try:
        manifest = make_manifest(root, a.rows)
        t = time.perf_counter()
        columns = open_source(manifest).columns
        scan_s = time.perf_counter() - t
        assert [f.name for f in columns] == ["reference", "speaker"], columns
        t = time.perf_counter()
        build_index(manifest, root / "index.parquet", workers=16)
        index_s = time.perf_counter() - t
        work = f"{a.rows} manifest rows, 1 s WAV files"
        report("index/manifest scan", [
            ("column scan rows/s", f"{a.rows / scan_s:,.0f}", work),
            ("whole index rows/s (scan + probes)", f"{a.rows / index_s:,.0f}", work),
            ("scan share of the index time", f"{100 * scan_s / index_s:.1f}%", work)], a.record)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
