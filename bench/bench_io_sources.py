"""Index rate (members/s) and one decode worker's rate (audio-s/s) by input kind, side by side in
one run: plain files on local disk, tar shards on local disk, and tar shards on a real S3 server
(`juicefs gateway` over a throw-away JuiceFS volume, started with hpc/scripts/s3_gateway.sh; the
gateway serves the volume without a FUSE mount). The clips are made with espeak-ng.
Usage: python bench/bench_io_sources.py [--clips 200] [--per-shard 50] [--record]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pyarrow.parquet as pq  # noqa: E402

from asrd.audio import decode  # noqa: E402
from asrd.audio.source import audio_source, s3_filesystem  # noqa: E402
from asrd.index import build_index  # noqa: E402
from asrd.testing.samples import SENTENCES, speak  # noqa: E402
from results import report  # noqa: E402

SCRIPTS = ROOT / "hpc" / "scripts"


def make_clips(folder: Path, n: int) -> list[Path]:
    """`n` FLAC clips (48 kHz mono): a few spoken, then copied, so that making them is cheap."""
    spoken = [speak(s, folder / f"seed{i}.flac", rate=48000) for i, s in enumerate(SENTENCES)]
    clips = []
    for i in range(n):
        p = folder / "files" / f"{i:06d}.flac"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(spoken[i % len(spoken)].read_bytes())
        clips.append(p)
    return clips


def make_shards(clips: list[Path], out: Path, per_shard: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for s in range(0, len(clips), per_shard):
        with tarfile.open(out / f"train-{s // per_shard:06d}.tar", "w") as tf:
            for c in clips[s:s + per_shard]:
                tf.add(c, arcname=c.name)


def measure(source: str, index: Path) -> tuple[float, float]:
    """(members indexed per second, audio seconds decoded per second by one worker)."""
    t = time.perf_counter()
    rep = build_index(source, index)
    index_rate = rep.rows / (time.perf_counter() - t)
    t, audio_s = time.perf_counter(), 0.0
    for path in pq.read_table(index, columns=["path"]).column(0).to_pylist():
        audio_s += len(decode(audio_source(path))) / 16000
    return index_rate, audio_s / (time.perf_counter() - t)


def sh(script: str, *args: str, env: dict | None = None) -> str:
    return subprocess.run(["bash", str(SCRIPTS / script), *args], check=True, text=True,
                          capture_output=True, env={**os.environ, **(env or {})}).stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--per-shard", type=int, default=50)
    ap.add_argument("--record", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        clips = make_clips(home, args.clips)
        make_shards(clips, home / "tars", args.per_shard)
        meta = f"sqlite3://{home}/meta.db"
        sh("juicefs.sh", "format", "--meta", meta, "--bucket", str(home / "bucket"),
           "--name", "bench")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        keys = {"MINIO_ROOT_USER": "bench", "MINIO_ROOT_PASSWORD": "bench-secret"}
        sh("s3_gateway.sh", "start", "--meta", meta, "--state", str(home / "gw"),
           "--address", f"127.0.0.1:{port}", env=keys)
        try:
            for line in sh("s3_gateway.sh", "env", "--state", str(home / "gw")).splitlines():
                name, _, value = line.removeprefix("export ").partition("=")
                os.environ[name] = value
            s3_filesystem.cache_clear()
            # Uploaded with `juicefs sync` through the gateway: pyarrow's multipart upload sends
            # chunked parts without a Content-Length, which the gateway refuses (HTTP 411).
            subprocess.run([str(ROOT / ".venv" / "bin" / "juicefs"), "sync", "--quiet",
                            f"{home / 'tars'}/", f"minio://{keys['MINIO_ROOT_USER']}:"
                            f"{keys['MINIO_ROOT_PASSWORD']}@127.0.0.1:{port}/bench/tars/"],
                           check=True, capture_output=True)
            kinds = {"files, local disk": str(home / "files"),
                     "tar, local disk": str(home / "tars"),
                     "tar, S3 (juicefs gateway)": "s3://bench/tars/"}
            figures = []
            work = f"{args.clips} FLAC clips of ~3 s, 48 kHz mono, {args.per_shard} per tar"
            for kind, source in kinds.items():
                index_rate, decode_rate = measure(source, home / "i.parquet")
                figures += [(f"index members/s, {kind}", f"{index_rate:,.1f}", work),
                            (f"decode audio-s/s (1 worker), {kind}", f"{decode_rate:,.1f}", work)]
        finally:
            sh("s3_gateway.sh", "stop", "--state", str(home / "gw"))
    report("io sources", figures, args.record)


if __name__ == "__main__":
    main()
