"""`asrd export` to a local folder and to s3:// (a JuiceFS volume served by `juicefs gateway`,
hpc/scripts/s3_gateway.sh, on this machine), the same merged run and format: rows/s of each.

The volume (SQLite metadata, a local folder as its object storage) and the gateway are made and
stopped here. An s3:// export writes each shard locally, uploads it under a temporary key and
moves it to its final key (a server-side copy), so its extra cost over a local export is the
upload and the copy.

    python bench/bench_s3_export.py --rows 20000 --record
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_export import corpus_clips, make_merged  # noqa: E402
from bench.results import report  # noqa: E402

SCRIPTS = ROOT / "hpc" / "scripts"
KEYS = {"MINIO_ROOT_USER": "asrdbench", "MINIO_ROOT_PASSWORD": "asrd-bench-secret"}


def sh(script: str, *args: str, env: dict | None = None) -> str:
    return subprocess.run(["bash", str(SCRIPTS / script), *args], check=True, text=True,
                          capture_output=True, env={**os.environ, **(env or {})}).stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gateway(work: Path) -> tuple[str, dict[str, str]]:
    """A fresh volume served over S3; returns its bucket URL and the client's AWS_* variables."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    meta = f"sqlite3://{work}/meta.db"
    sh("juicefs.sh", "format", "--meta", meta, "--bucket", str(work / "bucket"), "--name", name)
    sh("s3_gateway.sh", "start", "--meta", meta, "--state", str(work / "gw"), "--address",
       f"127.0.0.1:{free_port()}", env=KEYS)
    env = {}
    for line in sh("s3_gateway.sh", "env", "--state", str(work / "gw")).splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return f"s3://{name}", env


def export(run: Path, out: str, fmt: str, env: dict[str, str]) -> float:
    """Wall seconds of one export in a child process (bench_export.py's child: the export call
    itself, without the interpreter's start)."""
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_export.py"), "--child",
                           str(run), out, fmt, "original"], capture_output=True, text=True,
                          env={**os.environ, **env})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])["wall_s"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--recordings", type=int, default=12)
    ap.add_argument("--formats", default="webdataset,hf")
    ap.add_argument("--record", action="store_true", help="append the figures to bench/RESULTS.md")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-s3-export-"))
    try:
        clips = corpus_clips(work / "corpus", args.recordings)
        run = work / "run"
        make_merged(run, args.rows, clips)
        bucket, env = start_gateway(work / "jfs")
        figures = []
        for fmt in args.formats.split(","):
            local = export(run, str(work / f"local-{fmt}"), fmt, {})
            size = sum(p.stat().st_size for p in (work / f"local-{fmt}").rglob("*") if p.is_file())
            shutil.rmtree(work / f"local-{fmt}")
            remote = export(run, f"{bucket}/{fmt}", fmt, env)
            print(fmt, local, remote, flush=True)
            figures.append((f"{fmt}, original: rows/s to a local folder vs to s3://",
                            f"{args.rows / local:,.0f} vs {args.rows / remote:,.0f} rows/s "
                            f"({remote / local:.2f}x the time); {size / 2**30:.2f} GiB",
                            f"{args.rows:,} merged rows over {args.recordings} espeak recordings "
                            "(2-4 s, mixed formats), 256 MB shards; s3:// is a JuiceFS gateway "
                            "on the same machine (SQLite metadata, local disk as object "
                            "storage)"))
        report("export", figures, args.record)
    finally:
        if (work / "jfs" / "gw").is_dir():
            sh("s3_gateway.sh", "stop", "--state", str(work / "jfs" / "gw"))
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
