"""The merge filter's cost: rows per second through `RowFilter.apply` (sandboxed DuckDB, one query
per batch with a verdict per clause) beside the same predicate as a plain pyarrow compute filter,
on merge-sized record batches of output-like rows. Usage:
    python bench/bench_filter.py [--rows 1000000] [--batch 8192] [--record]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asrd.filters import RowFilter  # noqa: E402
from bench.results import report  # noqa: E402

CLAUSES = ["score >= 3", "error IS NULL AND duration_s < 30"]


def rows(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    score = rng.integers(1, 6, n).astype(float)
    return pa.table({
        "id": [f"utt{i:08d}" for i in range(n)],
        "text": pa.array(["a transcript of a typical length for one utterance"] * n),
        "duration_s": rng.uniform(1, 40, n),
        "score": pa.array(score, mask=rng.random(n) < 0.02),
        "error": pa.array([None] * n, pa.string()),
    })


def timed(fn, batches: list[pa.RecordBatch]) -> tuple[float, int]:
    t = time.perf_counter()
    kept = sum(fn(b).num_rows for b in batches)
    return time.perf_counter() - t, kept


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    a = ap.parse_args()
    batches = rows(a.rows).to_batches(max_chunksize=a.batch)
    f = RowFilter(CLAUSES)
    expr = ((pc.field("score") >= 3) & pc.field("error").is_null()
            & (pc.field("duration_s") < 30))
    f.apply(batches[0])  # warm up both
    batches[0].filter(expr)
    duck_s, duck_kept = timed(lambda b: f.apply(b)[0], batches)
    arrow_s, arrow_kept = timed(lambda b: b.filter(expr), batches)
    assert duck_kept == arrow_kept, (duck_kept, arrow_kept)
    work = f"{a.rows:,} output-like rows in {a.batch}-row batches, clauses {CLAUSES}"
    report("filter", [
        ("merge --filter rows/s: sandboxed DuckDB (per-clause counts) / plain pyarrow filter",
         f"{a.rows / duck_s:,.0f} / {a.rows / arrow_s:,.0f} (DuckDB at {arrow_s / duck_s:.2f}x)",
         work),
    ], a.record)


if __name__ == "__main__":
    main()
