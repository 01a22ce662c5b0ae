"""What the index's content hash costs: 1M index rows (ids, paths, probe columns, a reference of
a typical sentence's length, a language), written as `asrd index` writes them.

Measures, on the same batches: writing the Parquet file alone; hashing the batches (what
`asrd index` adds); hashing the whole file from its data (an index another tool wrote); reading
the stored record (what every task and merge pays); and the merge's label step (the index's
label columns put into the rows, compared with the shard's copies) per million rows when
nothing changed. Probing the audio headers, which `asrd index` also does, is not included: it
is far slower than all of these (bench/bench_index_merge.py).
Usage: python bench/bench_index_identity.py [--rows 1000000] [--record]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asrd.index import BATCH_ROWS, ROW_GROUP_ROWS  # noqa: E402
from asrd.index_identity import ColumnHasher, compute_identity, index_identity  # noqa: E402
from asrd.quality.flags import Thresholds  # noqa: E402
from asrd.relabel import Relabel, merged_schema  # noqa: E402
from asrd.schema import output_schema  # noqa: E402
from results import report  # noqa: E402

WORDS = "the quick brown fox jumps over a lazy dog while seven ships sail past".split()


def index_batches(rows: int) -> list[pa.Table]:
    rng = np.random.default_rng(0)
    out = []
    for start in range(0, rows, BATCH_ROWS):
        n = min(BATCH_ROWS, rows - start)
        ids = [f"speaker{i % 977:04d}/utt{i:08d}" for i in range(start, start + n)]
        refs = [" ".join(rng.choice(WORDS, size=12)) for _ in range(n)]
        out.append(pa.table({
            "id": ids, "path": [f"/data/corpus/audio/{i}.flac" for i in ids],
            "duration_s": rng.uniform(1, 20, n), "sample_rate": pa.array([16000] * n, pa.int32()),
            "channels": pa.array([1] * n, pa.int32()),
            "num_bytes": pa.array(rng.integers(10_000, 600_000, n), pa.int64()),
            "probe_error": pa.nulls(n, pa.string()), "reference": refs,
            "language": ["en"] * n}))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    a = ap.parse_args()
    batches = index_batches(a.rows)
    schema = batches[0].schema
    with tempfile.TemporaryDirectory(prefix="asrd-bench-") as tmp:
        path = Path(tmp) / "index.parquet"
        t = time.perf_counter()
        with pq.ParquetWriter(path, schema, compression="zstd") as w:
            for b in batches:
                w.write_table(b, row_group_size=ROW_GROUP_ROWS)
        write_s = time.perf_counter() - t
        t = time.perf_counter()
        hasher = ColumnHasher(schema)
        for b in batches:
            hasher.add(b)
        identity = hasher.identity()
        hash_s = time.perf_counter() - t
        t = time.perf_counter()
        assert compute_identity(path) == identity
        file_s = time.perf_counter() - t
        with pq.ParquetWriter(path, schema, compression="zstd") as w:
            for b in batches:
                w.write_table(b, row_group_size=ROW_GROUP_ROWS)
            w.add_key_value_metadata(identity.to_footer())
        t = time.perf_counter()
        assert index_identity(path) == identity
        stored_s = time.perf_counter() - t
        size_mb = path.stat().st_size / 2**20

        shard_schema = output_schema(schema)
        relabel = Relabel(merged_schema(shard_schema, schema), schema, Thresholds(), "en")
        labels = pq.read_table(path, columns=["id", *relabel.labels])
        shard = pa.table({f.name: (labels.column(f.name) if f.name in labels.column_names
                                   else pa.nulls(a.rows, f.type)) for f in shard_schema},
                         schema=shard_schema)
        t = time.perf_counter()
        for start in range(0, a.rows, 8192):
            relabel.apply(shard.slice(start, 8192), labels.slice(start, 8192))
        relabel_s = time.perf_counter() - t

    figures = {
        "write Parquet (zstd), s": write_s, "hash while writing, s": hash_s,
        "hash while writing, share of writing": hash_s / write_s,
        "hash an index from its data (no record), s": file_s,
        "read the stored record, ms": stored_s * 1000,
        "merge label step, nothing changed, s per 1M rows": relabel_s * 1e6 / a.rows,
        "index file MiB": size_mb}
    print(json.dumps(figures, indent=1))
    workload = f"{a.rows:,} rows (id, path, probe columns, 12-word reference, language)"
    report("index identity", [(k, f"{v:,.3f}", workload) for k, v in figures.items()], a.record)


if __name__ == "__main__":
    main()
