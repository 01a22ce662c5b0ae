"""The quality report of a merged run: one self-contained HTML page (figures embedded as PNG)
and the same figures for the merge's W&B run.

Modules: `data` (what the shard files and markers say, gathered in one pass), `plots` (the
matplotlib figures), `page` (the HTML). `write_report` ties them together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig

from asrd.report.data import ReportData, gather
from asrd.report.page import render
from asrd.report.plots import figures
from hpc.commit import atomic_path

__all__ = ["REPORT_NAME", "ReportData", "write_report"]

REPORT_NAME = "report.html"  # in the merged folder


def write_report(cfg: DictConfig, run_dir: Path, summary: Mapping[str, Any], out: Path
                 ) -> ReportData:
    """Gather, plot and write `out` (atomically); returns the data with its figures (PNG bytes
    by name), for the W&B run."""
    data = gather(cfg, run_dir, summary)
    data.figures = figures(data)
    with atomic_path(out) as tmp:
        tmp.write_text(render(data), encoding="utf-8")
    return data
