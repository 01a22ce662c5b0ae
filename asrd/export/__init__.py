"""`asrd export`: a merged run's rows with their audio, in the formats trainers read.

One loop (writer.py: sharded, atomic, resumable, streaming) and one shard writer per format:
hf.py (Hugging Face Parquet with an `Audio` column), wds.py (WebDataset tars), lhotse_manifest.py
(Lhotse recordings and supervisions). source.py reads the merged rows and their audio; items.py
makes one item per row, or the training windows; target.py puts the files in a local folder or
under an s3:// prefix.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from asrd.export.source import MergedSource
from asrd.export.target import export_target
from asrd.export.writer import ExportError, ExportShardWriter, ExportSummary, ShardedExport
from asrd.plan import load_plan
from asrd.rundir import RunDir


def writer_class(fmt: str) -> type[ExportShardWriter]:
    """The format's shard writer (imported only when used: each needs its own library)."""
    if fmt == "hf":
        from asrd.export.hf import HfShardWriter as cls
    elif fmt == "webdataset":
        from asrd.export.wds import WdsShardWriter as cls
    elif fmt == "lhotse":
        from asrd.export.lhotse_manifest import LhotseShardWriter as cls
    else:
        raise ExportError(f"unknown export format {fmt!r}")
    return cls


def export(cfg: DictConfig, out: str | Path, force: bool = False) -> ExportSummary:
    """Export RUN_DIR/merged into `out` (a folder or an s3:// URL) as `cfg.export` says;
    resumes an export killed there."""
    rd = RunDir(cfg.run.dir)
    target = export_target(out, rd.path)
    files = rd.merged_files()
    if not files:
        raise ExportError(f"{rd.merged_dir} holds no merged files: run `asrd merge` first")
    opts = cfg.export
    try:
        cls = writer_class(opts.format)
    except ImportError as e:
        raise ExportError(f"export.format={opts.format} needs {e.name}: pip install 'asrd[export]'"
                          ) from None
    index = load_plan(rd).index if rd.plan_path.is_file() else None
    source = MergedSource(files, index, opts.audio, opts.workers, opts.batch_rows,
                          samples_only=opts.windows)
    return ShardedExport(target, source, rd.merged_dir, cls, opts, cfg.faults).run(force=force)


__all__ = ["ExportError", "ExportSummary", "export"]
